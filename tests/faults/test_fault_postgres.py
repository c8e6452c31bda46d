"""PostgreSQL under faults: the server stopped, crashed or too busy under a running store.

Each test but the pool one runs its own PostgreSQL server (tests/_pg_server.py: a
free port, fsync on) so it can stop, kill and restart it without touching the shared
test server. Every store gets a small ``pool_timeout`` in its URL: a call waits that
long for a connection, so an outage costs each call a bounded wait, never a hang.

* a chain keeps answering while the server is stopped (``fast`` and ``immediate``),
  its turns wait in the write-behind queue and all arrive, once each and whole, when
  the server is back; feedback and reads fail fast the documented way meanwhile, and
  memory search leaves the chain answering without memory;
* a pool whose every connection is held by slow callers: reads raise ``StoreError``
  naming ``PoolTimeout`` after ``pool_timeout``, queued turns wait and are all written
  once the callers are done;
* the server SIGKILLed under a writer: every acknowledged ``record(wait=True)`` is
  there after crash recovery, and turns queued while it was down arrive;
* after an outage, the store works again as soon as the server does.

(The kill of a writer process runs on PostgreSQL too: test_fault_kill.py, ``store_spec``.)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from operator import itemgetter
from pathlib import Path
from typing import Any

import pytest
from _pg_server import PrivatePostgres, StopMode
from _postgres import POSTGRES_URL, require_postgres
from langchain_core.documents import Document
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

from feedback_plugin import (
    FeedbackCallbackHandler,
    FeedbackToolkit,
    PositiveMemoryRetriever,
    SessionStore,
    StoreError,
)

from .conftest import (
    assert_consistent,
    expected_answer,
    process_context,
    wait_for,
    with_params,
)
from .test_fault_kill import KILL_AFTER, _check_usable
from .workers import read_acks, write_stream

POOL_TIMEOUT = 0.5
"""Seconds a call waits for a connection in these tests (the default is 5)."""
FAIL_FAST = 3 * POOL_TIMEOUT + 1.0
"""The longest a failing call may take: a feedback call first flushes the queue (waiting
for the writer thread's own attempt, then trying), then updates: up to three waits."""

PROMPT = ChatPromptTemplate.from_messages([("human", "{question}")])
MEMORY_PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Answers the user liked:\n{memory}"), ("human", "{question}")]
)
BEFORE, DURING, AFTER = 3, 4, 2


def _turn(store: SessionStore, i: int, session_id: str = "s", **kwargs: Any) -> Any:
    """Turn ``t<i>`` with the fields :func:`assert_consistent` checks."""
    return store.record(
        session_id,
        f"q{i}",
        expected_answer(i),
        [f"c{i}"],
        metadata={"i": i},
        qa_id=f"t{i}",
        **kwargs,
    )


def _rate(store: SessionStore, i: int, session_id: str = "s") -> bool:
    """Rate turn ``t<i>`` as :func:`assert_consistent` expects."""
    return store.add_feedback(session_id, f"t{i}", f"fb{i}", i % 5 + 1)


def _timed(took: dict[str, float], name: str, call: Any) -> Any:
    """``call()``, its duration (raising or not) kept in ``took[name]``."""
    started = time.monotonic()
    try:
        return call()
    finally:
        took[name] = time.monotonic() - started


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(
        r.name == "feedback_plugin" and r.levelno >= logging.ERROR and text in r.getMessage()
        for r in caplog.records
    )


def _server_answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2) as con:
            con.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


# -- the server stopped and started again under a running chain ---------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_stopped_while_a_chain_runs(
    private_postgres: PrivatePostgres, mode: StopMode, caplog: pytest.LogCaptureFixture
) -> None:
    """``fast``: the server ends every session and checkpoints; ``immediate``: it quits
    without a checkpoint and the next start recovers from the WAL."""
    caplog.set_level(logging.WARNING, logger="feedback_plugin")
    total = BEFORE + DURING + 1 + AFTER  # + 1: a turn that searched memory in the outage
    model = FakeListChatModel(responses=[f"answer {i}" for i in range(total)])
    chain = PROMPT | model | StrOutputParser()
    run_ids = [uuid.uuid4() for _ in range(total)]
    url = with_params(private_postgres.url, pool_timeout=POOL_TIMEOUT)
    store = SessionStore(url)
    reader = SessionStore(url)  # another client: sees only what reached the server
    handler = FeedbackCallbackHandler(store)
    retriever = PositiveMemoryRetriever(store=store, user="alice")
    with_memory = (
        {
            "question": itemgetter("question"),
            "memory": itemgetter("question") | retriever | RunnableLambda(_texts),
        }
        | MEMORY_PROMPT
        | model
        | StrOutputParser()
    )

    def ask(i: int, runnable: Any = chain) -> str:
        config: Any = {
            "callbacks": [handler],
            "metadata": {"session_id": "chat", "user_id": "alice"},
            "run_id": run_ids[i],
        }
        answer: str = runnable.invoke({"question": f"question {i}"}, config=config)
        return answer

    def stored() -> list[str]:
        return [e.qa_id for e in reader.get_session("chat", user="alice")]

    try:
        # -- before the outage: turns and a rating reach the server ----------------------
        for i in range(BEFORE):
            assert ask(i) == f"answer {i}"
        assert store.thumbs("chat", str(run_ids[0]), up=True, user="alice")
        assert stored() == [str(r) for r in run_ids[:BEFORE]]

        # -- the server goes away ---------------------------------------------------------
        private_postgres.stop(mode=mode)
        assert not private_postgres.running and not _server_answers(private_postgres.url)
        took: dict[str, float] = {}
        for i in range(BEFORE, BEFORE + DURING):
            assert _timed(took, "ask", lambda i=i: ask(i)) == f"answer {i}"  # it answers ...
            assert took["ask"] < 1.0, took  # ... without waiting on the store: turn queued
        # the writer thread's failure is logged
        assert wait_for(lambda: _logged(caplog, "could not write"), timeout=10), [
            r.getMessage() for r in caplog.records
        ]
        # feedback reports the outage as the contract says, after a bounded wait
        rating = ("chat", str(run_ids[1]), "nice", 5)
        feedback = _timed(took, "add_feedback", lambda: store.add_feedback(*rating, user="alice"))
        assert feedback is False
        assert _logged(caplog, "not stored")
        with pytest.raises(StoreError, match=r"feedback failed.*PoolTimeout"):
            _timed(took, "rate", lambda: store.rate(*rating, user="alice"))
        # a read of the session whose turns are queued cannot answer: it raises
        with pytest.raises(StoreError, match="get_session failed"):
            _timed(took, "get_session", lambda: store.get_session("chat", user="alice"))
        # memory: the agent tool says so, a retriever in a chain answers without memory
        search = FeedbackToolkit(store=store, user="alice").get_tools()[2]
        found = _timed(took, "search tool", lambda: search.invoke({"query": "question"}))
        assert found.startswith("Error:"), found
        i = BEFORE + DURING
        assert _timed(took, "ask with memory", lambda: ask(i, with_memory)) == f"answer {i}"
        assert _logged(caplog, "memory unavailable")
        assert max(took.values()) < FAIL_FAST, took
        # nothing was dropped: every turn of the outage waits in the queue
        assert wait_for(lambda: store.pending >= DURING + 1, timeout=10), store.pending

        # -- the server is back: the queue delivers what was made during the outage ------
        private_postgres.start()
        back = time.monotonic()
        expected = [str(r) for r in run_ids[: BEFORE + DURING + 1]]
        assert wait_for(lambda: stored() == expected, timeout=30), stored()
        delivered = time.monotonic() - back
        assert store.add_feedback("chat", str(run_ids[1]), "nice", 2, user="alice")
        for i in range(BEFORE + DURING + 1, total):  # and recording goes on as before
            assert ask(i) == f"answer {i}"
        entries = store.get_session("chat", user="alice")
        assert [e.qa_id for e in entries] == [str(r) for r in run_ids]  # none lost or doubled
        for i, e in enumerate(entries):  # whole entries, nothing half-written
            assert (e.question, e.answer, e.user_id) == (f"question {i}", f"answer {i}", "alice")
            assert e.feedback_score == {0: 5, 1: 2}.get(i) and e.context == []
        assert store.pending == 0
        assert len(assert_consistent(store)) == total
        # positive memory works again, with the rating made before the outage
        docs = retriever.invoke("question 0")
        assert [d.metadata["qa_id"] for d in docs] == [str(run_ids[0])]
        print(f"{mode}: calls during the outage took", {k: round(v, 2) for k, v in took.items()})
        print(f"{mode}: the queue was delivered {delivered:.2f} s after the server was back")
        for record in caplog.records:  # for the test log: what an operator sees
            if record.name == "feedback_plugin":
                print(f"{record.levelname} {record.getMessage().splitlines()[0]}")
    finally:
        for s in (store, reader):
            # (StoreError: the server did not come back; the test has failed already)
            with contextlib.suppress(StoreError):
                s.close()


def _texts(docs: list[Document]) -> str:
    return "\n".join(d.page_content for d in docs) or "(none)"


# -- a pool whose every connection is taken by slow callers -------------------------------


@pytest.mark.slow
def test_an_exhausted_pool_fails_reads_fast_and_keeps_queued_turns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    require_postgres("PostgreSQL fault")
    caplog.set_level(logging.WARNING, logger="feedback_plugin")
    namespace = f"test-{uuid.uuid4().hex}"
    url = with_params(POSTGRES_URL, pool_size=2, pool_timeout=POOL_TIMEOUT)
    store = SessionStore(url, namespace=namespace)
    other = SessionStore(POSTGRES_URL, namespace=namespace)  # a pool of its own
    held, release = threading.Semaphore(0), threading.Event()
    errors: list[BaseException] = []

    def slow_caller() -> None:
        try:
            with store.backend.pool.connection() as con:  # type: ignore[attr-defined]
                held.release()
                while not release.is_set():  # a slow query, until the test is done
                    con.execute("SELECT pg_sleep(0.1)")
        except BaseException as exc:  # reported by the test
            errors.append(exc)
            held.release()

    callers = [threading.Thread(target=slow_caller) for _ in range(2)]
    try:
        _turn(store, 0, wait=True)
        for caller in callers:
            caller.start()
        assert held.acquire(timeout=10) and held.acquire(timeout=10) and not errors, errors

        # a read: StoreError naming the pool's timeout, after pool_timeout
        took: dict[str, float] = {}
        with pytest.raises(StoreError, match=r"get_session failed.*PoolTimeout"):
            _timed(took, "get_session", lambda: store.get_session("s"))
        assert POOL_TIMEOUT * 0.9 <= took["get_session"] < POOL_TIMEOUT + 1.0, took
        # turns recorded meanwhile are queued: record() does not wait for the pool
        queued = _timed(took, "record x5", lambda: [_turn(store, i) for i in range(1, 6)])
        assert took["record x5"] < 0.5, took
        # feedback: False, after a bounded wait, and not applied
        assert _timed(took, "add_feedback", lambda: _rate(store, 0)) is False
        assert took["add_feedback"] < FAIL_FAST, took
        print("calls on the exhausted pool took", {k: round(v, 3) for k, v in took.items()})
        assert _logged(caplog, "not stored")
        # the queued turns are not written yet (another pool reads the server) ...
        assert [e.qa_id for e in other.get_session("s")] == ["t0"]
        assert other.get_entry("s", "t0").feedback_score is None  # type: ignore[union-attr]
        # ... the writer thread found the pool exhausted: a passing fault, the turns kept
        assert wait_for(lambda: _logged(caplog, "could not write"), timeout=10)
        assert not _logged(caplog, "cannot be written")

        # -- the slow callers finish: every queued turn is written, once -------------------
        release.set()
        for caller in callers:
            caller.join(timeout=10)
        assert not errors, errors
        store.flush()
        assert store.pending == 0
        assert [e.qa_id for e in other.get_session("s")] == ["t0"] + [e.qa_id for e in queued]
        assert _rate(store, 0) and _rate(store, 3)
        entries = assert_consistent(other)
        assert sorted(e.qa_id for e in entries) == sorted(f"t{i}" for i in range(6))
        assert {e.qa_id: e.feedback_score for e in entries if e.feedback_score} == {
            "t0": 1,
            "t3": 4,
        }
    finally:
        release.set()
        for caller in callers:
            if caller.is_alive():
                caller.join(timeout=10)
        with contextlib.suppress(StoreError):
            store.backend.drop()  # type: ignore[attr-defined]
        for s in (store, other):
            with contextlib.suppress(StoreError):
                s.close()


# -- the server SIGKILLed under a writer ------------------------------------------------


@pytest.mark.slow
def test_kill_9_of_the_postgres_server_loses_no_acknowledged_turn(
    private_postgres: PrivatePostgres, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A child records with ``write_behind=False`` (each turn committed before ``record``
    returns) and acknowledges; the postmaster is SIGKILLed mid-stream. With fsync on,
    crash recovery brings back every acknowledged turn; turns this process queued while
    the server was dead arrive once it is back."""
    caplog.set_level(logging.WARNING, logger="feedback_plugin")
    url = with_params(private_postgres.url, pool_timeout=POOL_TIMEOUT)
    acks = tmp_path / "acks"
    ctx = process_context()
    child = ctx.Process(target=write_stream, args=(url, "", False, str(acks)), daemon=True)
    store = SessionStore(url)
    reader = SessionStore(url)
    queued = range(10_000, 10_005)  # turn numbers of the queued session
    try:
        _turn(store, 9_999, "queued", wait=True)  # this store's pool holds a connection
        child.start()
        try:
            assert wait_for(lambda: len(read_acks(str(acks))[0]) >= KILL_AFTER, 60)
            private_postgres.kill()  # SIGKILL the postmaster mid-stream
            child.join(timeout=30)  # the writer's next record() raises StoreError: it exits
            assert child.exitcode not in (None, 0), child.exitcode
        finally:
            if child.is_alive():
                child.kill()
                child.join(timeout=10)
        turns, feedback, _ = read_acks(str(acks))
        for i in queued:  # recorded while the server is dead: queued, kept
            _turn(store, i, "queued")
        assert wait_for(lambda: _logged(caplog, "could not write"), timeout=10)

        private_postgres.start()  # crash recovery from the WAL
        expected = [f"t{i}" for i in (9_999, *queued)]
        assert wait_for(
            lambda: [e.qa_id for e in reader.get_session("queued")] == expected, timeout=30
        ), reader.get_session("queued")
        stored = [e.qa_id for e in reader.get_session("s")]
        assert stored == [f"t{i}" for i in range(len(stored))]
        assert stored[: len(turns)] == turns  # every acknowledged turn survived
        assert len(stored) <= len(turns) + 1  # beyond them at most the one in flight
        for qa_id in feedback:  # and every acknowledged rating
            entry = reader.get_entry("s", qa_id)
            assert entry is not None and entry.feedback_text == f"fb{qa_id[1:]}"
        assert store.pending == 0
        assert len(assert_consistent(reader)) == len(stored) + len(expected)
        _check_usable(reader)
    finally:
        for s in (store, reader):
            with contextlib.suppress(StoreError):
                s.close()


# -- after an outage, back as soon as the server is ---------------------------------------


@pytest.mark.slow
def test_the_store_works_again_as_soon_as_the_server_is_back(
    private_postgres: PrivatePostgres,
) -> None:
    """The backend's promise (backends/postgres.py, "Connections"): connections are
    checked before each use, "so a server restart costs no failed call once it is back".

    The pool (psycopg_pool) replaces a lost connection, and grows for a waiting caller,
    with tasks that retry with back-off (attempts 1, 3, 7, 15 ... s after the first, for
    up to ``reconnect_timeout``, 5 minutes by default), and grows with one task at a time.
    Here two calls during a 4.4 s outage start those tasks; the server is back between
    two attempts, and the first call after it must succeed, not wait for the next
    attempt (up to about the outage's length later: 11 s after a 20 s outage, measured;
    minutes after a long one)."""
    url = with_params(private_postgres.url, pool_timeout=1)
    store = SessionStore(url)
    try:
        _turn(store, 0, wait=True)
        private_postgres.stop(mode="fast")
        down = time.monotonic()
        assert not _rate(store, 0)  # the pool finds its connection dead: replaced, retried
        assert not _rate(store, 0)  # a caller waits on an empty pool: it grows, retried
        time.sleep(max(0.0, down + 4.4 - time.monotonic()))
        private_postgres.start()
        back = time.monotonic()
        took: dict[str, float] = {}
        first = _timed(took, "first", lambda: _rate(store, 0))
        assert wait_for(lambda: _rate(store, 0), timeout=30)
        again = time.monotonic() - back
        assert first, (
            f"the first call after the server was back failed after {took['first']:.2f} s;"
            f" the store worked again only {again:.2f} s after the server"
        )
        assert len(assert_consistent(store)) == 1
    finally:
        with contextlib.suppress(StoreError):
            store.close()
