"""Code that runs in the contract suite's child processes (imports nothing from pytest).

Children come from a ``forkserver`` that has ``feedback_plugin`` and this module
preloaded (``conftest.process_context``): a fork, not a fresh interpreter start,
so four children cost about as much as one.
"""

from __future__ import annotations

from typing import Any

from feedback_plugin import SessionStore

WORKERS = 4
TURNS = 300
OWN_EVERY = 5
RATED = 60


def rate_then_record(
    location: str, namespace: str, worker: int, barrier: Any, results: Any
) -> None:
    """Phase 1: rate the turns the others rate, in lockstep; phase 2: record, all at once."""
    store = SessionStore(location, namespace=namespace or None, write_behind=worker % 2 == 0)
    rated = [e.qa_id for e in store.get_session("rated")]
    ok = 0
    for qa_id in rated:
        # all four change the same turn at the same moment: two set a comment, two a
        # score; a read-modify-write that is not atomic loses one of them
        barrier.wait(timeout=60)
        if worker < 2:
            ok += store.add_feedback("rated", qa_id, feedback_text=f"text from {worker}")
        else:
            ok += store.add_feedback("rated", qa_id, feedback_score=worker)
    results.put((worker, ok))
    barrier.wait(timeout=60)
    for i in range(TURNS):
        store.record("shared", f"q{worker}-{i}", f"a{worker}-{i}", qa_id=f"w{worker}-{i}")
        if i % OWN_EVERY == 0:
            store.record(f"own-{worker}", f"q{i}", "a", qa_id=f"w{worker}-own-{i}", user="u")
    store.close()  # (forked children skip atexit: the exit flush is tested with `python -c`)
