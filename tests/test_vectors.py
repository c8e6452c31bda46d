"""The vector store under the memory index: leases, stale vectors, the log (backends/vectors.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from feedback_plugin.backends.fts import MemoryIndex
from feedback_plugin.models import SessionQAEntry

np = pytest.importorskip("numpy")


def _liked(index: MemoryIndex, qa_id: str, answer: str, correction: str | None = None) -> None:
    index.apply(
        SessionQAEntry(
            qa_id=qa_id,
            session_id="s",
            question=f"question {qa_id}",
            answer=answer,
            feedback_score=5,
            correction=correction,
        )
    )


def _vectors_in_file(index: MemoryIndex) -> dict[int, str]:
    rows = index.reading(
        lambda con: con.execute("SELECT turn_id, model FROM embeddings").fetchall()
    )
    return dict(rows)


def test_a_vector_of_an_old_text_is_never_stored(tmp_path: Path) -> None:
    """A turn whose text changes while its batch is being embedded (a correction
    arrives) is queued again; the vector made from the old text is dropped."""
    index = MemoryIndex(tmp_path / "memory.sqlite3")
    _liked(index, "a", "old answer")
    _liked(index, "b", "another answer")
    vectors = index._vector_store()
    vectors.select("m")  # no embedder thread: the test leases by hand
    stamp, batch = vectors.lease(10)
    assert sorted(text for _, text in batch)[0].startswith("Question: question a")
    _liked(index, "a", "old answer", correction="the corrected answer")  # text changed
    vectors.store("m", stamp, {turn_id: [1.0, 0.0] for turn_id, _ in batch})
    stored = _vectors_in_file(index)
    assert len(stored) == 1  # b's vector; a's was made from a text it no longer has
    assert vectors.pending() == 1  # a waits for its new text's vector
    stamp, again = vectors.lease(10)
    assert [text.endswith("the corrected answer") for _, text in again] == [True]
    index.close()


def test_a_lease_is_taken_once_and_a_failed_batch_is_given_back(tmp_path: Path) -> None:
    index = MemoryIndex(tmp_path / "memory.sqlite3")
    _liked(index, "a", "answer")
    vectors = index._vector_store()
    vectors.select("m")
    stamp, first = vectors.lease(10)
    _, second = vectors.lease(10)  # another process, say: nothing left to take
    assert len(first) == 1 and second == []
    vectors.release(stamp, [turn_id for turn_id, _ in first])  # the model failed
    _, third = vectors.lease(10)
    assert [t for t, _ in third] == [t for t, _ in first]
    index.close()


def test_vectors_leave_with_their_turn(tmp_path: Path) -> None:
    index = MemoryIndex(tmp_path / "memory.sqlite3")
    _liked(index, "a", "answer")
    vectors = index._vector_store()
    vectors.select("m")
    stamp, batch = vectors.lease(10)
    vectors.store("m", stamp, {turn_id: [0.0, 1.0] for turn_id, _ in batch})
    assert len(_vectors_in_file(index)) == 1
    hits = index.search_by_vector([0.0, 1.0], model="m", user=None, limit=5, min_score=4)
    assert [h.qa_id for h in hits] == ["a"]
    index.forget(None, "s", "a")  # the rating was cleared: the row goes, its vector too
    assert _vectors_in_file(index) == {}
    assert index.search_by_vector([0.0, 1.0], model="m", user=None, limit=5, min_score=4) == []
    index.close()


def test_closing_waits_for_the_embedder_thread_to_finish(tmp_path: Path) -> None:
    """The index file's connections close right after: a thread still reading them would
    crash the process (a segfault in SQLite, seen in the contract tests), so close()
    returns only once the embedder thread has stopped."""
    import threading

    started = threading.Event()

    class Slow:
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            started.set()
            time.sleep(0.3)
            return [[1.0, 0.0] for _ in texts]

    index = MemoryIndex(tmp_path / "memory.sqlite3")
    _liked(index, "a", "answer")
    before = set(threading.enumerate())  # other tests' stores may still be closing theirs
    index.use_embeddings("slow", Slow())
    assert started.wait(5)
    threads = [
        t
        for t in set(threading.enumerate()) - before
        if t.name.startswith("feedback-plugin-embedder")
    ]
    assert threads
    index.close()
    assert not any(t.is_alive() for t in threads)


def test_a_process_keeps_only_the_recently_searched_owners_vectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many users: the matrices of the least recently searched go (HELD_MAX vectors in
    all); a user forgotten is read again on their next query, with nothing lost."""
    from feedback_plugin.backends import vectors as vectors_module

    monkeypatch.setattr(vectors_module, "HELD_MAX", 4)
    index = MemoryIndex(tmp_path / "memory.sqlite3")
    for user in ("u1", "u2", "u3"):
        for n in range(2):
            index.apply(
                SessionQAEntry(
                    qa_id=f"{user}-{n}", session_id="s", question=f"q {user} {n}",
                    answer="a", feedback_score=5, user_id=user,
                )
            )  # fmt: skip
    store = index._vector_store()
    store.select("m")
    stamp, batch = store.lease(10)
    store.store("m", stamp, {turn_id: [1.0, 0.0] for turn_id, _ in batch})

    def found(user: str) -> set[str]:
        hits = index.search_by_vector([1.0, 0.0], model="m", user=user, limit=5, min_score=4)
        return {h.qa_id for h in hits}

    assert found("u1") == {"u1-0", "u1-1"}
    assert found("u2") == {"u2-0", "u2-1"}
    assert found("u3") == {"u3-0", "u3-1"}  # u1's matrix goes: 6 vectors > 4
    assert sum(h.size for h in store._owners.values()) <= 4
    assert found("u1") == {"u1-0", "u1-1"}  # read again
    index.forget("u1", "s", "u1-0")
    assert found("u1") == {"u1-1"}
    index.close()
