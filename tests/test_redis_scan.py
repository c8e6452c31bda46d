"""Redis: a scan (memory rebuild, export) reads its own namespace's keys, not the database.

A counting connection records every command the backend sends, pipelined or
not: a scan of a small namespace beside a large one names only its own keys
and never walks the keyspace (no ``SCAN``), once the namespace's ``users``
set is marked complete. Stores written before the set existed are walked once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from _redis import REDIS_URL, require_redis

from feedback_plugin.backends.redis import RedisBackend
from feedback_plugin.backends.redis_lua import COMPLETE, enc

pytestmark = pytest.mark.slow


def _counting_client() -> tuple[Any, list[tuple[str, ...]]]:
    """A redis-py client whose connections record every command they send."""
    import redis
    from redis.connection import Connection

    sent: list[tuple[str, ...]] = []

    class Counting(Connection):
        def send_command(self, *args: Any, **kwargs: Any) -> None:  # one command
            sent.append(tuple(str(a) for a in args))
            super().send_command(*args, **kwargs)

        def pack_commands(self, commands: Any) -> Any:  # a pipeline
            commands = list(commands)
            sent.extend(tuple(str(a) for a in cmd) for cmd in commands)
            return super().pack_commands(commands)

    pool = redis.ConnectionPool.from_url(
        REDIS_URL, connection_class=Counting, decode_responses=True
    )
    return redis.Redis(connection_pool=pool), sent


def _items(users: int, sessions: int, turns: int, tag: str) -> list[Any]:
    return [
        ((f"{tag}-user{u}", f"s{s}"), f"q{t}", f'{{"qa_id": "q{t}", "u": {u}, "s": {s}}}')
        for u in range(users)
        for s in range(sessions)
        for t in range(turns)
    ]


@pytest.fixture
def namespaces() -> Iterator[list[RedisBackend]]:
    """Backends on fresh namespaces of the test database (dropped afterwards)."""
    require_redis()
    made: list[RedisBackend] = []
    yield made
    for backend in made:
        backend.drop()
        backend.close()


def _backend(made: list[RedisBackend], **kw: Any) -> RedisBackend:
    backend = RedisBackend(REDIS_URL, namespace=f"test-{uuid.uuid4().hex}", **kw)
    made.append(backend)
    return backend


def _write(backend: RedisBackend, items: list[Any]) -> None:
    for i in range(0, len(items), 1000):
        backend.append(items[i : i + 1000])


def _scanned(backend: RedisBackend) -> list[tuple[Any, str]]:
    return sorted(backend.scan(), key=lambda kv: (str(kv[0]), kv[1]))


def test_a_small_namespace_scans_only_its_own_keys(namespaces: list[RedisBackend]) -> None:
    big, small = _backend(namespaces), _backend(namespaces)
    big_items = _items(users=50, sessions=20, turns=20, tag="big")  # 20,000 turns
    _write(big, big_items)
    small_items = _items(users=3, sessions=4, turns=5, tag="small")  # 60 turns
    _write(small, small_items)
    assert len(_scanned(small)) == 60  # the first scan marks the set complete
    client, sent = _counting_client()
    counted = RedisBackend(REDIS_URL, namespace=small.namespace, client=client)
    try:
        sent.clear()
        got = _scanned(counted)
    finally:
        counted.close()
    assert sorted(p for _, p in got) == sorted(p for _, _, p in small_items)
    assert {k for k, _ in got} == {k for k, _, _ in small_items}
    names = [cmd[0].upper() for cmd in sent]
    assert "SCAN" not in names and "KEYS" not in names
    keys = [a for cmd in sent for a in cmd[1:] if a.startswith("fp:")]
    assert keys and all(a.startswith(small._prefix) for a in keys), keys[:5]
    # users, then one pipeline of sessions, one of turns, one of MGETs: a handful
    assert len(sent) <= 25, names  # and the connection handshake (HELLO, SELECT, ...)
    # the large namespace scans the same through its set as through a walk
    walked = _scanned(big)  # its first scan: the walk
    assert len(walked) == 20_000
    assert big.client.sismember(big._users_key, COMPLETE)
    assert _scanned(big) == walked


def test_a_store_written_before_the_users_set_is_walked_once(
    namespaces: list[RedisBackend],
) -> None:
    old = _backend(namespaces)
    items = _items(users=4, sessions=2, turns=3, tag="old")
    _write(old, items)
    old.client.delete(old._users_key)  # as a store written by an earlier release
    _write(old, _items(users=1, sessions=1, turns=2, tag="new"))  # a new writer's append
    assert not old.client.sismember(old._users_key, COMPLETE)
    client, sent = _counting_client()
    counted = RedisBackend(REDIS_URL, namespace=old.namespace, client=client)
    try:
        assert len(_scanned(counted)) == 24 + 2  # every entry, old and new
        assert "SCAN" in [cmd[0].upper() for cmd in sent]
        sent.clear()
        assert len(_scanned(counted)) == 26  # now through the set
        assert "SCAN" not in [cmd[0].upper() for cmd in sent]
    finally:
        counted.close()
    members = old.client.smembers(old._users_key)
    assert members == {COMPLETE, enc("new-user0")} | {enc(f"old-user{u}") for u in range(4)}


def test_an_interrupted_walk_marks_nothing(namespaces: list[RedisBackend]) -> None:
    old = _backend(namespaces)
    _write(old, _items(users=2, sessions=1, turns=600, tag="old"))
    old.client.delete(old._users_key)
    scan = old.scan()
    next(scan)
    scan.close()
    assert not old.client.exists(old._users_key)


def test_deleting_a_users_last_session_leaves_the_set(namespaces: list[RedisBackend]) -> None:
    backend = _backend(namespaces)
    _write(backend, _items(users=2, sessions=2, turns=1, tag="d"))
    assert backend.delete_session(("d-user0", "s0")) == 1
    assert backend.client.sismember(backend._users_key, enc("d-user0"))
    assert backend.delete_session(("d-user0", "s1")) == 1
    assert not backend.client.sismember(backend._users_key, enc("d-user0"))
    assert {k for k, _ in backend.scan()} == {("d-user1", "s0"), ("d-user1", "s1")}


def test_users_whose_sessions_expired_leave_the_set(namespaces: list[RedisBackend]) -> None:
    backend = _backend(namespaces, ttl=1.5)
    backend.append(_items(users=1, sessions=1, turns=2, tag="gone"))
    list(backend.scan())  # marks the set complete
    time.sleep(0.9)
    backend.append(_items(users=1, sessions=1, turns=2, tag="kept"))
    time.sleep(0.75)  # "gone" expired, "kept" not
    assert {k for k, _ in backend.scan()} == {("kept-user0", "s0")}
    assert backend.client.smembers(backend._users_key) == {COMPLETE, enc("kept-user0")}
    assert 0 < backend.client.pttl(backend._users_key) <= 1500  # and the set expires too
