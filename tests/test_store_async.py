"""The store's async methods: signatures, and how each backend waits (the behaviour
itself is pinned on every backend by tests/contract/test_contract_async.py)."""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _redis import REDIS_URL, require_redis

from feedback_plugin import SessionStore, pool


@pytest.fixture(params=["disk", "redis"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    if request.param == "disk":
        store = SessionStore(tmp_path / "store")
    else:
        require_redis()
        store = SessionStore(REDIS_URL, namespace=f"test-{uuid.uuid4().hex}")
    yield store
    if request.param == "redis":
        store.backend.drop()  # type: ignore[attr-defined]
    store.close()


def test_every_async_method_has_the_signature_of_its_sync_twin() -> None:
    twins = [
        name for name in dir(SessionStore) if name.startswith("a") and name[1:] in dir(SessionStore)
    ]
    assert len(twins) >= 12
    for name in twins:
        sync = inspect.signature(getattr(SessionStore, name[1:]))
        asynchronous = inspect.signature(getattr(SessionStore, name))
        assert inspect.iscoroutinefunction(getattr(SessionStore, name)), name
        assert [(p.name, p.kind, p.default) for p in asynchronous.parameters.values()] == [
            (p.name, p.kind, p.default) for p in sync.parameters.values()
        ], name


def _block_the_pool() -> threading.Event:
    """Occupy every worker thread of the library (both lanes) until the event is set."""
    release = threading.Event()
    for _ in range(pool.WORKERS):
        pool._executor("read").submit(release.wait, 30)
    pool._executor("write").submit(release.wait, 30)
    return release


async def test_redis_async_methods_wait_on_redis_asyncio_not_on_worker_threads(
    any_store: SessionStore,
) -> None:
    store = any_store
    turn = await store.arecord("s1", "q", "a", wait=True)
    release = _block_the_pool()
    try:
        calls = asyncio.gather(
            store.aget_session("s1"),
            store.aget_entry("s1", turn.qa_id),
            store.aget_many([("s1", turn.qa_id)]),
            store.arate("s1", turn.qa_id, feedback_score=5),
            store.alist_sessions(),
        )
        if store.backend.__class__.__name__ == "RedisBackend":
            read, entry, many, rated, names = await asyncio.wait_for(calls, 5)
            assert read == [turn] and entry == turn and many == [turn]
            assert rated.feedback_score == 5 and names == ["s1"]
        else:  # diskcache has no async driver: its calls wait for a worker thread
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(calls), 0.5)
            release.set()
            await calls
    finally:
        release.set()


def test_a_redis_store_serves_one_event_loop_after_another(any_store: SessionStore) -> None:
    """Async connections belong to their loop: a new loop gets its own (asyncio.run twice)."""
    store = any_store
    first = asyncio.run(store.arecord("s1", "q1", "a1", wait=True))
    second = asyncio.run(store.arecord("s1", "q2", "a2", wait=True))
    assert asyncio.run(store.aget_session("s1")) == [first, second]
    assert store.get_session("s1") == [first, second]
