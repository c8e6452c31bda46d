"""Large memories: the approximate index, its snapshot, and centred scores
(backends/ann.py, backends/vector_owners.py, backends/vectors.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from feedback_plugin.backends import ann
from feedback_plugin.backends.fts import MemoryIndex
from feedback_plugin.models import SessionQAEntry

np = pytest.importorskip("numpy")
pytest.importorskip("faiss")

DIMS = 16


def _vector(i: int) -> list[float]:
    """Turn ``i``'s vector: one of 8 clusters, spread a little (deterministic)."""
    rng = np.random.default_rng(i)
    base = np.zeros(DIMS, dtype=np.float32)
    base[i % 8] = 1.0
    vec = base + 0.15 * rng.standard_normal(DIMS).astype(np.float32)
    return (vec / np.linalg.norm(vec)).tolist()


def _fill(index: MemoryIndex, count: int, model: str = "m") -> None:
    """``count`` liked turns with their vectors stored (leased and stored by hand)."""
    for i in range(count):
        index.apply(
            SessionQAEntry(
                qa_id=f"q{i}", session_id="s", question=f"question {i}", answer="a",
                feedback_score=5,
            )
        )  # fmt: skip
    vectors = index._vector_store()
    vectors.select(model)
    while True:
        stamp, batch = vectors.lease(500)
        if not batch:
            break
        # the text leased is "Question: question {i}\nAnswer: a"
        number = {t: int(text.split("\n")[0].rsplit(" ", 1)[1]) for t, text in batch}
        vectors.store(model, stamp, {t: _vector(i) for t, i in number.items()})


def _search(index: MemoryIndex, vec: list[float], limit: int = 5) -> list[str]:
    hits = index.search_by_vector(vec, model="m", user=None, limit=limit, min_score=4)
    return [h.qa_id for h in hits]


@pytest.fixture()
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(ann, "APPROX_MIN", 300)
    return 300


def _exact(index: MemoryIndex, vec: list[float], limit: int) -> list[str]:
    """The true nearest turns: every vector of the file, scored as the store scores."""
    from feedback_plugin.backends.vector_owners import centred_scores

    rows = index.reading(
        lambda con: con.execute(
            "SELECT t.qa_id, e.vec FROM embeddings e JOIN turns t ON t.id = e.turn_id"
        ).fetchall()
    )
    matrix = np.stack([np.frombuffer(v, dtype=np.float32) for _, v in rows])
    query = np.asarray(vec, dtype=np.float32)
    center = index._vector_store()._center_for(np, DIMS)
    order = np.argsort(-centred_scores(np, matrix, query / np.linalg.norm(query), center))
    return [rows[i][0].strip('"') for i in order[:limit]]


def test_a_large_memory_is_indexed_in_the_background_and_found_by_words_meanwhile(
    tmp_path: Path, small_threshold: int
) -> None:
    """A memory past APPROX_MIN vectors is not read on the query path (seconds at 400k):
    the first query finds nothing by meaning, the index is built off the query path
    (the embedder calls maintain() when idle), and then it finds what exact search does."""
    index = MemoryIndex(tmp_path / "memory.sqlite3")
    _fill(index, 600)
    query = _vector(3)
    assert _search(index, query, 10) == []  # being indexed
    vectors = index._vector_store()
    vectors.maintain()
    held = vectors._owners[index.owner_of(None)]
    assert held.approximate and held.size == 600
    approx = _search(index, query, 10)
    assert len(set(approx) & set(_exact(index, query, 10))) >= 8  # approximate, but close
    assert "q3" in approx
    index.close()


def test_a_memory_that_grows_past_the_threshold_moves_to_an_approximate_index(
    tmp_path: Path, small_threshold: int
) -> None:
    index = MemoryIndex(tmp_path / "memory.sqlite3")
    _fill(index, 200)
    assert "q3" in _search(index, _vector(3))  # small: read, searched exactly
    vectors = index._vector_store()
    assert not vectors._owners[index.owner_of(None)].approximate
    for i in range(200, 400):
        index.apply(
            SessionQAEntry(
                qa_id=f"q{i}", session_id="s", question=f"question {i}", answer="a",
                feedback_score=5,
            )
        )  # fmt: skip
    _fill(index, 0)
    assert "q3" in _search(index, _vector(3))  # still exact, now with 400 vectors
    vectors.maintain()
    assert vectors._owners[index.owner_of(None)].approximate
    assert {"q3", "q203"} <= set(_search(index, _vector(3), 60))
    index.close()


def test_the_next_query_sees_removals_and_additions_in_the_approximate_index(
    tmp_path: Path, small_threshold: int
) -> None:
    index = MemoryIndex(tmp_path / "memory.sqlite3")
    _fill(index, 400)
    index._vector_store().maintain()  # nothing held: the file's owners are not known yet
    _search(index, _vector(5))
    index._vector_store().maintain()
    assert "q5" in _search(index, _vector(5))
    index.forget(None, "s", "q5")  # its rating cleared: it leaves memory
    assert "q5" not in _search(index, _vector(5), 20)
    index.apply(
        SessionQAEntry(qa_id="new", session_id="s", question="new", answer="a", feedback_score=5)
    )
    vectors = index._vector_store()
    stamp, batch = vectors.lease(10)
    target = [0.0] * DIMS
    target[DIMS - 1] = 1.0  # a direction no other turn has
    vectors.store("m", stamp, {batch[0][0]: target})
    assert _search(index, target, 1) == ["new"]
    index.close()


def test_another_process_opens_the_snapshot_and_catches_up_from_the_log(
    tmp_path: Path, small_threshold: int
) -> None:
    path = tmp_path / "memory.sqlite3"
    index = MemoryIndex(path)
    _fill(index, 400)
    _search(index, _vector(1))
    index._vector_store().maintain()  # builds the index and writes its snapshot
    snapshots = list(Path(f"{path}.ann").glob("*.faiss"))
    assert len(snapshots) == 1
    index.forget(None, "s", "q9")  # after the snapshot: only in the log
    code = f"""
import sys
from feedback_plugin.backends import ann
ann.APPROX_MIN = 300
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_ann import _vector
from feedback_plugin.backends.fts import MemoryIndex
index = MemoryIndex({str(path)!r})
hits = index.search_by_vector(_vector(9), model="m", user=None, limit=20, min_score=4)
held = index._vector_store()._owners[index.owner_of(None)]
print(held.approximate, "q9" in [h.qa_id for h in hits], "q17" in [h.qa_id for h in hits])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # opened from the snapshot (no exact load), without the turn removed since
    assert out.stdout.split() == ["True", "False", "True"]
    index.close()


def test_a_torn_snapshot_is_ignored_and_built_again(tmp_path: Path, small_threshold: int) -> None:
    path = tmp_path / "memory.sqlite3"
    index = MemoryIndex(path)
    _fill(index, 400)
    _search(index, _vector(2))
    index._vector_store().maintain()
    index.close()
    for f in Path(f"{path}.ann").glob("*.faiss"):
        f.write_bytes(b"not an index")
    again = MemoryIndex(path)
    assert _search(again, _vector(2)) == []  # unreadable (logged): indexed again meanwhile
    again._vector_store().maintain()
    assert "q2" in _search(again, _vector(2))
    again.close()
    third = MemoryIndex(path)  # the snapshot written again is whole
    assert "q2" in _search(third, _vector(2))
    third.close()


def test_centred_scores_are_the_cosine_after_the_centre_is_taken_off() -> None:
    """The one-pass formula (no centred copy of the matrix) equals the definition, and a
    zero centre gives the plain cosine."""
    from feedback_plugin.backends.vector_owners import centred_scores

    rng = np.random.default_rng(0)
    rows = rng.standard_normal((50, 8)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    query = rows[7] + 0.1 * rng.standard_normal(8).astype(np.float32)
    query /= np.linalg.norm(query)
    center = rows.mean(axis=0)
    got = centred_scores(np, rows, query, center)
    shifted = rows - center
    want = shifted @ (query - center)
    want /= np.linalg.norm(shifted, axis=1) * np.linalg.norm(query - center)
    assert np.allclose(got, want, atol=1e-5)
    assert np.allclose(centred_scores(np, rows, query, np.zeros(8, np.float32)), rows @ query)


def test_an_approximate_index_grown_fourfold_is_trained_again(
    tmp_path: Path, small_threshold: int
) -> None:
    """Its lists were cut for the vectors it was trained on: at four times as many, it
    is built again from what it holds, and still finds what it did."""
    index = MemoryIndex(tmp_path / "memory.sqlite3")
    _fill(index, 300)
    _search(index, _vector(3))
    vectors = index._vector_store()
    vectors.maintain()
    held = vectors._owners[index.owner_of(None)]
    assert held.approximate and held.index.trained_on == 300
    for i in range(300, 1200):
        index.apply(
            SessionQAEntry(
                qa_id=f"q{i}", session_id="s", question=f"question {i}", answer="a",
                feedback_score=5,
            )
        )  # fmt: skip
    _fill(index, 0)
    assert "q3" in _search(index, _vector(3), 20)  # the new vectors went into the old lists
    vectors.maintain()
    rebuilt = vectors._owners[index.owner_of(None)]
    assert rebuilt is not held and rebuilt.index.trained_on == 1200
    assert {"q3", "q1003"} <= set(_search(index, _vector(3), 400))
    index.close()
