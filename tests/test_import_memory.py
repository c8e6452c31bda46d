"""An import reaches positive memory without a rebuild (feed records, not a restart).

The backends under test are real ones, subclassed only to count ``scan()`` calls:
each is one memory index rebuilt from the whole store.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _redis import REDIS_URL, require_redis

from feedback_plugin import PositiveMemoryRetriever, SessionQAEntry, SessionStore
from feedback_plugin.backends.disk import DiskBackend
from feedback_plugin.backends.redis import RedisBackend


class CountingDisk(DiskBackend):
    scans = 0

    def scan(self) -> Iterator[tuple[Any, str]]:
        self.scans += 1
        return super().scan()


class CountingRedis(RedisBackend):
    scans = 0

    def scan(self) -> Iterator[tuple[Any, str]]:
        self.scans += 1
        return super().scan()


Open = Callable[..., SessionStore]


@pytest.fixture(params=["disk", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Open]:
    """``open_store(**backend_options)``: another store (another process's) on one location."""
    kind, namespace = request.param, f"test-{uuid.uuid4().hex}"
    if kind == "redis":
        require_redis()
    opened: list[SessionStore] = []

    def open_(**options: Any) -> SessionStore:
        backend: DiskBackend | RedisBackend
        if kind == "disk":
            backend = CountingDisk(tmp_path / "store", **options)
        else:
            backend = CountingRedis(REDIS_URL, namespace=namespace, **options)
        store = SessionStore(backend=backend)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()
    if kind == "redis":
        cleanup = RedisBackend(REDIS_URL, namespace=namespace)
        cleanup.drop()
        cleanup.close()


def scans(store: SessionStore) -> int:
    return int(store.backend.scans)  # type: ignore[attr-defined]


def turns(n: int, prefix: str, score: int | None = 5) -> list[SessionQAEntry]:
    return [
        SessionQAEntry(
            qa_id=f"{prefix}{i}",
            session_id=f"{prefix}-session{i % 4}",
            question=f"How do I configure the {prefix} gadget number {i}?",
            answer=f"Open settings, case {i}.",
            feedback_score=score,
        )
        for i in range(n)
    ]


def remembered(store: SessionStore, query: str) -> set[str]:
    docs = PositiveMemoryRetriever(store=store, k=200).invoke(query)
    return {d.metadata["qa_id"] for d in docs}


def built(store: SessionStore) -> None:
    """A liked turn, and the store's memory index built (one scan)."""
    turn = store.record("s1", "How do I reset my password?", "Use the link.", wait=True)
    assert store.thumbs("s1", turn.qa_id, up=True)
    assert remembered(store, "password") == {turn.qa_id}


def test_imported_ratings_are_found_without_a_rebuild(open_store: Open) -> None:
    a, b = open_store(), open_store()
    built(a)
    assert remembered(b, "password")
    before = scans(a), scans(b)
    assert a.import_entries(turns(40, "imp") + turns(10, "plain", score=None)) == 50
    expected = {f"imp{i}" for i in range(40)}
    assert remembered(a, "gadget") == expected
    assert remembered(b, "gadget") == expected  # another process: from the feed records
    assert (scans(a), scans(b)) == before  # nobody rebuilt from a scan
    # the importer skipped its own records: nothing left to re-read
    assert a.memory.position() == a.backend.feed_position()  # type: ignore[attr-defined]


def test_imports_in_many_batches_and_ratings_after_them(open_store: Open) -> None:
    a = open_store()
    built(a)
    assert a.import_entries(turns(45, "imp"), batch_size=7) == 45
    assert len(remembered(a, "gadget")) == 45
    assert a.thumbs("imp-session0", "imp0", up=False)
    assert "imp0" not in remembered(a, "gadget")
    assert scans(a) == 1


def test_an_unrated_import_over_a_liked_turn_leaves_the_importers_memory(
    open_store: Open,
) -> None:
    a = open_store()
    built(a)
    a.import_entries(turns(3, "imp"))
    assert a.import_entries(turns(3, "imp", score=None)) == 3
    hits = a.memory.search("gadget", user=None, limit=10, min_score=4)
    assert hits == []
    assert scans(a) == 1


def test_a_feed_too_small_for_the_import_restarts_instead(open_store: Open) -> None:
    # diskcache keeps feed_keep records, Redis stream_maxlen: 5 cannot take 20
    try:
        a = open_store(feed_keep=5)
    except TypeError:
        a = open_store(stream_maxlen=5)
    built(a)
    assert a.import_entries(turns(20, "imp")) == 20
    assert remembered(a, "gadget") == {f"imp{i}" for i in range(20)}
    assert scans(a) == 2  # the fallback: a rebuild


def test_a_memory_that_cannot_take_imports_is_reset() -> None:
    from contract.memory_backend import InMemoryBackend

    class CountingMemory(InMemoryBackend):
        scans = 0

        def scan(self) -> Iterator[tuple[Any, str]]:
            self.scans += 1
            return super().scan()

    store = SessionStore(backend=CountingMemory(f"memory://{uuid.uuid4().hex}"))
    try:
        built(store)
        assert store.import_entries(turns(5, "imp")) == 5
        assert remembered(store, "gadget") == {f"imp{i}" for i in range(5)}
        assert scans(store) == 2  # no add_changes: the feed restarted
    finally:
        store.close()


def test_an_import_before_the_index_exists_is_found_by_its_first_build(open_store: Open) -> None:
    a = open_store()
    assert a.import_entries(turns(6, "imp")) == 6
    assert remembered(a, "gadget") == {f"imp{i}" for i in range(6)}
    assert scans(a) == 1


# -- the feeds themselves -----------------------------------------------------------------------


def test_disk_feed_records_span_and_trimming(tmp_path: Path) -> None:
    backend = DiskBackend(tmp_path / "store", feed_keep=10)
    try:
        items = [((None, "s"), f"q{i}", f'{{"qa_id": "q{i}"}}') for i in range(12)]
        backend.append(items)
        start = backend.feed_position()
        span = backend.add_changes([((None, "s"), f"q{i}") for i in range(8)])
        assert span is not None and span[0] == start and span[1] == backend.feed_position()
        caught = backend.changes_since(start)
        assert caught is not None and caught[0] == span[1] and len(caught[1]) == 8
        later = backend.add_changes([((None, "s"), f"q{i}") for i in range(8, 12)])
        assert later is not None and later[0] == span[1]
        assert backend.changes_since(start) is None  # 12 records > 10 kept: rebuild
        caught = backend.changes_since(span[1])
        assert caught is not None and len(caught[1]) == 4
        assert backend.add_changes([((None, "s"), "q0")] * 11) is None  # more than kept
        assert backend.feed_position() == later[1]  # ... and nothing written
    finally:
        backend.close()


def test_redis_feed_records_span(tmp_path: Path) -> None:
    require_redis()
    backend = RedisBackend(REDIS_URL, namespace=f"test-{uuid.uuid4().hex}", stream_maxlen=50)
    try:
        items = [((None, "s"), f"q{i}", f'{{"qa_id": "q{i}"}}') for i in range(5)]
        backend.append(items)
        start = backend.feed_position()
        assert start.endswith("/0-0")  # "{generation token}/{stream id}": no change yet
        span = backend.add_changes([((None, "s"), f"q{i}") for i in range(5)])
        assert span is not None and span[0] == start and span[1] == backend.feed_position()
        caught = backend.changes_since(start)
        assert caught is not None and caught[0] == span[1] and len(caught[1]) == 5
        assert backend.add_changes([((None, "s"), "q0")] * 51) is None
        assert backend.feed_position() == span[1]
    finally:
        backend.drop()
        backend.close()
