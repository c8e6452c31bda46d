"""PostgreSQL without pgvector: large memories by meaning (backends/postgres_vectors.py).

A memory past APPROX_MIN vectors is never read whole on the query path: the
embedder's idle work builds its approximate index and snapshots it, a fresh
process opens the snapshot and reads only the vectors added since, and a
vector deleted from the table is never handed back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _postgres import POSTGRES_URL, require_postgres
from test_ann import _vector

from feedback_plugin import SessionStore
from feedback_plugin.backends import ann
from feedback_plugin.backends.postgres_memory import PostgresMemory, _Queue
from feedback_plugin.models import SessionQAEntry

np = pytest.importorskip("numpy")
pytest.importorskip("faiss")


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[SessionStore]:
    require_postgres()
    monkeypatch.setattr(ann, "APPROX_MIN", 300)
    monkeypatch.setenv("FEEDBACK_PLUGIN_CACHE_DIR", str(tmp_path / "cache"))
    s = SessionStore(POSTGRES_URL, namespace=f"test-{uuid.uuid4().hex}")
    yield s
    s.close()
    s.backend.drop()  # type: ignore[attr-defined]
    s.backend.close()


def _fill(store: SessionStore, start: int, stop: int) -> None:
    """Liked turns ``start..stop`` with their vectors stored (leased and stored by hand)."""
    memory(store).queue_all("m")
    store.import_entries(
        SessionQAEntry(
            qa_id=f"q{i}", session_id="s", question=f"question {i}", answer="a",
            feedback_score=5,
        )
        for i in range(start, stop)
    )  # fmt: skip
    queue = _Queue(memory(store))
    while True:
        stamp, batch = queue.lease(500)
        if not batch:
            break
        number = {t: int(text.split("\n")[0].rsplit(" ", 1)[1]) for t, text in batch}
        queue.store("m", stamp, {t: _vector(i) for t, i in number.items()})


def memory(store: SessionStore) -> PostgresMemory:
    found = store.memory
    assert isinstance(found, PostgresMemory)
    return found


def _search(store: SessionStore, vec: list[float], limit: int = 10) -> list[str]:
    hits = memory(store).search_by_vector(vec, model="m", user=None, limit=limit, min_score=4)
    return [h.qa_id for h in hits]


def test_a_large_memory_is_indexed_off_the_query_path_then_found(store: SessionStore) -> None:
    _fill(store, 0, 600)
    query = _vector(3)
    assert _search(store, query) == []  # being indexed: the words half answers alone
    memory(store)._vectors.maintain()  # the embedder's idle work
    found = _search(store, query, 20)
    assert "q3" in found
    assert all(int(q[1:]) % 8 == 3 for q in found[:10])  # its cluster, nearest first


def test_a_fresh_process_opens_the_snapshot_and_reads_only_what_was_added(
    store: SessionStore,
) -> None:
    _fill(store, 0, 600)
    _search(store, _vector(3))
    memory(store)._vectors.maintain()
    _fill(store, 600, 610)  # added after the snapshot
    again = SessionStore(store.location, namespace=store.namespace)
    try:
        found = _search(again, _vector(605))  # no maintain(): the snapshot is opened
        assert "q605" in found  # read since the snapshot
        assert all(int(q[1:]) % 8 == 5 for q in found)  # the rest: from the snapshot
    finally:
        again.close()


def test_a_vector_that_left_the_table_is_never_handed_back(store: SessionStore) -> None:
    _fill(store, 0, 600)
    _search(store, _vector(3))
    memory(store)._vectors.maintain()
    assert "q3" in _search(store, _vector(3))
    store.delete_feedback("s", "q3")  # left memory: its vector is deleted with it
    assert "q3" not in _search(store, _vector(3), 50)
    store.add_feedback("s", "q11", feedback_score=1)  # rated down: still rated, filtered
    assert "q11" not in _search(store, _vector(3), 50)
