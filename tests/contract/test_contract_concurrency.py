"""Four processes on one store, on every backend: no turn and no feedback is lost."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .conftest import BACKENDS, Stores, process_context, require_backend, require_processes
from .workers import OWN_EVERY, RATED, TURNS, WORKERS, rate_then_record

pytestmark = pytest.mark.slow  # four processes per backend: about 2 s each


@pytest.fixture(scope="module", params=BACKENDS)
def four_processes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stores]:
    require_backend(request.param)
    stores = Stores(request.param, tmp_path_factory.mktemp("four"))
    require_processes(stores)
    setup = stores(write_behind=False)
    for i in range(RATED):
        setup.record("rated", f"q{i}", f"a{i}")
    setup.close()
    ctx = process_context()
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=rate_then_record,
            args=(stores.location, stores.namespace or "", w, barrier, results),
        )
        for w in range(WORKERS)
    ]
    try:
        for p in procs:
            p.start()
        reported = dict(results.get(timeout=120) for _ in range(WORKERS))
        for p in procs:
            p.join(timeout=60)
        assert [p.exitcode for p in procs] == [0] * WORKERS
        assert reported == {w: RATED for w in range(WORKERS)}  # every call returned True
        yield stores
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
        stores.close()


def test_four_processes_lose_no_turn(four_processes: Stores) -> None:
    store = four_processes()
    ids = [e.qa_id for e in store.get_session("shared")]
    assert len(ids) == WORKERS * TURNS
    assert set(ids) == {f"w{w}-{i}" for w in range(WORKERS) for i in range(TURNS)}
    for w in range(WORKERS):  # each writer's turns keep their order
        assert [x for x in ids if x.startswith(f"w{w}-")] == [f"w{w}-{i}" for i in range(TURNS)]
        own = [e.qa_id for e in store.get_session(f"own-{w}", user="u")]
        assert own == [f"w{w}-own-{i}" for i in range(0, TURNS, OWN_EVERY)]
    assert all(e.answer == f"a{e.qa_id[1:]}" for e in store.get_session("shared"))
    assert len(store.get_session("shared", last_n=7)) == 7
    assert sorted(store.list_sessions(user="u")) == [f"own-{w}" for w in range(WORKERS)]
    own_total = WORKERS * len(range(0, TURNS, OWN_EVERY))
    assert sum(1 for _ in store.iter_entries()) == WORKERS * TURNS + own_total + RATED


def test_concurrent_text_and_score_on_one_turn_both_survive(four_processes: Stores) -> None:
    entries = four_processes().get_session("rated")
    assert len(entries) == RATED
    for i, e in enumerate(entries):
        assert e.feedback_text in ("text from 0", "text from 1"), e
        assert e.feedback_score in (2, 3), e
        assert e.feedback_time is not None
        assert (e.question, e.answer) == (f"q{i}", f"a{i}")


def test_concurrent_feedback_is_in_positive_memory_consistently(four_processes: Stores) -> None:
    from feedback_plugin import PositiveMemoryRetriever

    store = four_processes()
    # scores 2 and 3 only: nothing is positive at the default threshold ...
    assert PositiveMemoryRetriever(store=store, k=50).invoke("q1") == []
    # ... and every turn is at min_score=2
    docs = PositiveMemoryRetriever(store=store, k=RATED + 10, min_score=2).invoke("")
    assert len(docs) == RATED
