"""Several processes and threads on one store: nothing lost, no feedback overwritten."""

from __future__ import annotations

import multiprocessing as mp
import threading
from pathlib import Path
from typing import Any

import pytest

from feedback_plugin import SessionStore

WORKERS = 4
TURNS = 300
OWN_EVERY = 6  # every 6th turn also goes into the worker's own session
FEEDBACK_ENTRIES = 80

# -- the worker (module level: the "spawn" start method imports it) ------------------------


def _worker(path: str, worker: int, mode: str, barrier: Any, results: Any) -> None:
    """Phase 1: rate turns that the others rate too; phase 2: record turns, all at once."""
    store = SessionStore(path, write_behind=(mode != "sync"))
    rated = [e.qa_id for e in store.get_session("rated")]
    ok = 0
    for qa_id in rated:
        # lockstep: all four processes change the same turn at the same moment, so a
        # read-modify-write that is not atomic loses a comment or a score (measured:
        # ~15% of the turns without diskcache's transaction)
        barrier.wait(timeout=60)
        if worker < 2:  # group A: comments only
            ok += store.add_feedback("rated", qa_id, feedback_text=f"text from {worker}")
        else:  # group B: scores only
            ok += store.add_feedback("rated", qa_id, feedback_score=worker)
    results.put((worker, ok))
    barrier.wait(timeout=60)
    for i in range(TURNS):
        store.record("shared", f"q{worker}-{i}", f"a{worker}-{i}", qa_id=f"w{worker}-{i}")
        if i % OWN_EVERY == 0:
            store.record(f"own-{worker}", f"q{i}", "a", qa_id=f"w{worker}-own-{i}")
    if mode != "exit":  # "exit": leave the queue to the interpreter-exit flush
        store.close()


@pytest.fixture(scope="module")
def four_processes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four spawned processes rate the same turns, then record into one directory at once."""
    path = tmp_path_factory.mktemp("concurrency") / "store"
    with SessionStore(path) as store:
        for i in range(FEEDBACK_ENTRIES):
            store.record("rated", f"q{i}", f"a{i}")
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    modes = ["queue", "queue", "sync", "exit"]
    procs = [
        ctx.Process(target=_worker, args=(str(path), w, modes[w], barrier, results))
        for w in range(WORKERS)
    ]
    for p in procs:
        p.start()
    reported = dict(results.get(timeout=120) for _ in range(WORKERS))
    for p in procs:
        p.join(timeout=60)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * WORKERS
    # every add_feedback call returned True
    assert reported == {w: FEEDBACK_ENTRIES for w in range(WORKERS)}
    return path


# -- processes --------------------------------------------------------------------------


@pytest.mark.slow
def test_four_processes_lose_no_turn(four_processes: Path) -> None:
    with SessionStore(four_processes) as store:
        shared = store.get_session("shared")
        ids = [e.qa_id for e in shared]
        assert len(ids) == WORKERS * TURNS
        assert set(ids) == {f"w{w}-{i}" for w in range(WORKERS) for i in range(TURNS)}
        for w in range(WORKERS):  # each writer's turns keep their order
            mine = [x for x in ids if x.startswith(f"w{w}-")]
            assert mine == [f"w{w}-{i}" for i in range(TURNS)]
            own = [e.qa_id for e in store.get_session(f"own-{w}")]
            assert own == [f"w{w}-own-{i}" for i in range(0, TURNS, OWN_EVERY)]
        assert all(e.answer == f"a{e.qa_id[1:]}" for e in shared)
        assert len(store.get_session("shared", last_n=7)) == 7
        total = sum(1 for _ in store.iter_entries())
        own_total = WORKERS * len(range(0, TURNS, OWN_EVERY))
        assert total == WORKERS * TURNS + own_total + FEEDBACK_ENTRIES


@pytest.mark.slow
def test_concurrent_feedback_from_four_processes_loses_nothing(four_processes: Path) -> None:
    with SessionStore(four_processes) as store:
        entries = store.get_session("rated")
    assert len(entries) == FEEDBACK_ENTRIES
    for i, e in enumerate(entries):  # group A's comment and group B's score both survived
        assert e.feedback_text in ("text from 0", "text from 1"), e
        assert e.feedback_score in (2, 3), e
        assert e.feedback_time is not None
        assert (e.question, e.answer) == (f"q{i}", f"a{i}")


# -- threads ----------------------------------------------------------------------------


def test_eight_threads_on_one_store_lose_nothing(store: SessionStore) -> None:
    n_threads, per_thread = 8, 150
    start = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            start.wait(timeout=30)
            for i in range(per_thread):
                e = store.record("s1", f"q{t}-{i}", "a", qa_id=f"t{t}-{i}", user="u")
                if i % 25 == 0:  # read-your-writes from every thread
                    assert store.get_entry("s1", e.qa_id, user="u") == e
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert errors == []
    ids = [e.qa_id for e in store.get_session("s1", user="u")]
    assert len(ids) == n_threads * per_thread
    assert set(ids) == {f"t{t}-{i}" for t in range(n_threads) for i in range(per_thread)}
    for t in range(n_threads):
        assert [x for x in ids if x.startswith(f"t{t}-")] == [
            f"t{t}-{i}" for i in range(per_thread)
        ]


def test_threads_rating_the_same_turns(store: SessionStore) -> None:
    ids = [store.record("s1", f"q{i}", "a").qa_id for i in range(40)]
    start = threading.Barrier(4)
    results: dict[int, int] = {}

    def rate(worker: int) -> None:
        start.wait(timeout=30)
        order = ids if worker % 2 == 0 else ids[::-1]
        ok = 0
        for qa_id in order:
            if worker < 2:
                ok += store.add_feedback("s1", qa_id, feedback_text=f"t{worker}")
            else:
                ok += store.thumbs("s1", qa_id, up=worker == 2)
        results[worker] = ok

    threads = [threading.Thread(target=rate, args=(w,)) for w in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert results == {w: 40 for w in range(4)}
    for e in store.get_session("s1"):
        assert e.feedback_text in ("t0", "t1")
        assert e.feedback_score in (1, 5)


def test_writers_in_one_process_take_turns_without_sqlite_busy_waits(tmp_path: Path) -> None:
    """Concurrent ratings in one process queue on the backend's lock, never in SQLite's
    busy handler (which sleeps up to 100 ms per try: a burst of ratings from an async
    app's worker threads got a tail of a second). With a busy timeout of zero, a
    writer that met another one inside SQLite would fail at once."""
    from feedback_plugin.backends import DiskBackend

    store = SessionStore(backend=DiskBackend(tmp_path / "store", timeout=0.0))
    other = SessionStore(backend=DiskBackend(tmp_path / "store", timeout=0.0))  # same files
    turns = [store.record("s", f"q{i}", f"a{i}", wait=True) for i in range(40)]
    errors: list[BaseException] = []

    def rate(who: SessionStore, score: int) -> None:
        try:
            for _ in range(5):
                for turn in turns:
                    who.rate("s", turn.qa_id, feedback_score=score)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=rate, args=(who, score))
        for who, score in ((store, 4), (store, 4), (other, 4), (other, 4))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {e.feedback_score for e in store.get_session("s")} == {4}
    store.close()
    other.close()
