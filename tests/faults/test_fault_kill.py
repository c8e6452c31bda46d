"""``kill -9`` in the middle of a stream of writes, on diskcache, Redis and PostgreSQL.

A child process records turn after turn (and rates some) and acknowledges
each call that returned; the parent kills it with SIGKILL mid-stream, then
checks the store against the acknowledgements:

* ``write_behind=False``: ``record`` returns once the turn is stored, so every
  acknowledged turn must be there (plus at most the one in flight);
* ``write_behind=True``: what can be lost is the unflushed tail only -- the
  turns queued in the last ``flush_interval`` -- never a turn recorded before
  an acknowledged ``add_feedback`` (which flushes the queue first);

and in both, nothing half-written appears and the store stays usable.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from feedback_plugin import PositiveMemoryRetriever, SessionStore

from .conftest import PrivateRedis, assert_consistent, process_context, wait_for
from .workers import read_acks, write_stream

KILL_AFTER = 150  # acknowledged turns before the kill


def _run_and_kill(location: str, namespace: str, write_behind: bool, acks: Path) -> float:
    """Start the writer, SIGKILL it once KILL_AFTER turns are acknowledged; return the kill time.

    With write-behind the writer rates a turn only every 50 turns (each rating
    flushes the queue), so mostly the queue's own timer decides what is written.
    """
    ctx = process_context()
    rate_every = 50 if write_behind else 7
    child = ctx.Process(
        target=write_stream,
        args=(location, namespace, write_behind, str(acks), rate_every),
        daemon=True,
    )
    child.start()
    try:
        started = wait_for(
            lambda: len(read_acks(str(acks))[0]) >= KILL_AFTER or not child.is_alive(), 60
        )
        assert started and child.is_alive(), f"writer did not get going (exit {child.exitcode})"
        killed_at = time.time()
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=10)
        assert child.exitcode == -signal.SIGKILL
        return killed_at
    finally:
        if child.is_alive():
            child.kill()
            child.join(timeout=10)


def _check_usable(store: SessionStore) -> None:
    """After the crash the store takes new turns, feedback and memory queries."""
    e = store.record("after", "How do I reset my password after a crash?", "Use the link.")
    assert store.thumbs("after", e.qa_id, up=True)
    docs = PositiveMemoryRetriever(store=store).invoke("reset password crash")
    assert [d.metadata["qa_id"] for d in docs] == [e.qa_id]
    assert store.get_session("after") == [store.get_entry("after", e.qa_id)]


def test_kill_9_loses_no_acknowledged_turn(store_spec: tuple[str, str], tmp_path: Path) -> None:
    location, namespace = store_spec
    acks = tmp_path / "acks"
    _run_and_kill(location, namespace, write_behind=False, acks=acks)
    turns, feedback, _ = read_acks(str(acks))
    assert len(turns) >= KILL_AFTER

    with SessionStore(location, namespace=namespace or None) as store:
        assert_consistent(store)
        stored = [e.qa_id for e in store.get_session("s")]
        # one writer, in order: the stored turns are t0, t1, ... with no gap
        assert stored == [f"t{i}" for i in range(len(stored))]
        # every acknowledged turn is there; beyond them at most the one in flight
        assert stored[: len(turns)] == turns
        assert len(stored) <= len(turns) + 1
        for qa_id in feedback:  # every acknowledged rating too
            entry = store.get_entry("s", qa_id)
            assert entry is not None and entry.feedback_text == f"fb{qa_id[1:]}"
        _check_usable(store)


def test_kill_9_with_write_behind_loses_at_most_the_unflushed_tail(
    store_spec: tuple[str, str], tmp_path: Path
) -> None:
    location, namespace = store_spec
    acks = tmp_path / "acks"
    killed_at = _run_and_kill(location, namespace, write_behind=True, acks=acks)
    turns, feedback, times = read_acks(str(acks))

    with SessionStore(location, namespace=namespace or None) as store:
        assert_consistent(store)
        stored = [e.qa_id for e in store.get_session("s")]
        # what is there is a gap-free prefix of the stream ...
        assert stored == [f"t{i}" for i in range(len(stored))]
        assert len(stored) <= len(turns) + 1
        # ... that reaches past every acknowledged rating (add_feedback flushes first) ...
        if feedback:  # a rating of turn j was made right after recording turn j + 3
            assert len(stored) >= max(int(f[1:]) for f in feedback) + 4
        for qa_id in feedback:
            entry = store.get_entry("s", qa_id)
            assert entry is not None and entry.feedback_score == int(qa_id[1:]) % 5 + 1
        # ... and what is lost was queued in the last moments before the kill (the
        # documented window is flush_interval = 0.05 s; 2 s of slack for a loaded machine)
        lost_times = times[len(stored) :]
        assert all(t > killed_at - 2.0 for t in lost_times), (len(lost_times), killed_at)
        _check_usable(store)


def test_kill_9_of_the_redis_server_with_appendfsync_always(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """The server crashes instead of the client: with ``appendfsync always`` every turn
    it acknowledged survives the restart (see docs/backends.md for weaker settings)."""
    acks = tmp_path / "acks"
    ctx = process_context()
    child = ctx.Process(
        target=write_stream, args=(private_redis.url, "", False, str(acks)), daemon=True
    )
    child.start()
    try:
        assert wait_for(lambda: len(read_acks(str(acks))[0]) >= KILL_AFTER, 60)
        private_redis.kill()  # SIGKILL the server mid-stream
        child.join(timeout=30)  # the writer's next record() raises StoreError: it exits
    finally:
        if child.is_alive():
            child.kill()
            child.join(timeout=10)
    turns, feedback, _ = read_acks(str(acks))
    private_redis.start()
    with SessionStore(private_redis.url) as store:
        assert_consistent(store)
        stored = [e.qa_id for e in store.get_session("s")]
        assert stored == [f"t{i}" for i in range(len(stored))]
        assert stored[: len(turns)] == turns
        assert len(stored) <= len(turns) + 1
        for qa_id in feedback:
            entry = store.get_entry("s", qa_id)
            assert entry is not None and entry.feedback_text == f"fb{qa_id[1:]}"
        _check_usable(store)


@pytest.fixture(autouse=True)
def _no_leftover_children() -> Any:
    yield
    import multiprocessing

    for child in multiprocessing.active_children():
        child.kill()
        child.join(timeout=10)
