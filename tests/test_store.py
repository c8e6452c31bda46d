"""SessionStore on a real diskcache dir: what the contract suite does not cover.

The behaviours every backend shares (docs/api.md) are tested once per backend in
``tests/contract/``; this file keeps what is about diskcache, the write-behind queue
and this process (exit flush, close, construction), and a few finer points.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from feedback_plugin import SessionStore
from feedback_plugin.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(REPO),
    )
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def slow_store(store_dir: Path) -> Iterator[SessionStore]:
    """A write-behind store whose queue waits 10 s: recorded turns stay queued until read."""
    s = SessionStore(store_dir, flush_interval=10)
    yield s
    s.close()


# -- record / get_session -------------------------------------------------------


def test_record_accepts_any_iterable_context(store: SessionStore) -> None:
    store.record("s1", "q", "a", (f"doc {i}" for i in range(3)))
    assert store.get_session("s1")[0].context == ["doc 0", "doc 1", "doc 2"]


# -- feedback --------------------------------------------------------------------


def test_feedback_time_is_set_on_every_change(store: SessionStore) -> None:
    e = store.record("s1", "q", "a")
    times = []
    for change in (
        lambda: store.add_feedback("s1", e.qa_id, feedback_score=3),
        lambda: store.add_feedback("s1", e.qa_id, "text"),
        lambda: store.thumbs("s1", e.qa_id, up=True),
        lambda: store.delete_feedback("s1", e.qa_id),
        lambda: store.thumbs("s1", e.qa_id, up=False),
    ):
        time.sleep(0.02)
        assert change() is True
        t = store.get_session("s1")[0].feedback_time
        assert t is not None and t.tzinfo is not None
        times.append(t)
    assert all(a < b for a, b in itertools.pairwise(times)), times


def test_feedback_changes_only_the_target_entry(store: SessionStore) -> None:
    a = store.record("s1", "q1", "a1")
    b = store.record("s1", "q2", "a2")
    c = store.record("s2", "q3", "a3", qa_id=a.qa_id)  # same qa_id, other session
    assert store.add_feedback("s1", a.qa_id, "x", 4)
    assert store.get_session("s1")[1] == b
    assert store.get_session("s2") == [c]


# -- user scoping -----------------------------------------------------------------


def test_alice_cannot_change_an_unowned_turn(store: SessionStore) -> None:
    e = store.record("s1", "q", "a")  # user=None
    assert store.add_feedback("s1", e.qa_id, "x", 2, user="alice") is False
    assert store.get_session("s1", user="alice") == []
    assert store.get_session("s1")[0].feedback_score is None


# -- persistence across processes -------------------------------------------------------


def test_exit_without_close_loses_nothing(store_dir: Path) -> None:
    started = time.monotonic()
    run_python(
        """
        import sys
        from feedback_plugin import SessionStore
        s = SessionStore(sys.argv[1])
        for i in range(500):
            s.record("s1", f"q{i}", f"a{i}", qa_id=f"id{i}")

        def handle(i):
            # a short-lived store (one per request, say), dropped right after record()
            SessionStore(sys.argv[1]).record("s2", f"q{i}", "a", qa_id=f"id{i}")

        for i in range(5):
            handle(i)

        import multiprocessing

        def child():
            # a forked child ends with os._exit, which skips atexit
            own = SessionStore(sys.argv[1])
            for i in range(50):
                own.record("s3", "q", "a", qa_id=f"id{i}")
                s.record("s4", "q", "a", qa_id=f"id{i}")  # the store inherited from the parent

        if "fork" in multiprocessing.get_all_start_methods():
            p = multiprocessing.get_context("fork").Process(target=child)
            p.start()
            p.join(60)
            assert p.exitcode == 0
        # normal exit: no flush(), no close()
        """,
        str(store_dir),
    )
    elapsed = time.monotonic() - started
    with SessionStore(store_dir) as s:
        assert [e.qa_id for e in s.get_session("s1")] == [f"id{i}" for i in range(500)]
        # five store objects, five queues: each turn is there (their order is not pinned)
        assert sorted(e.qa_id for e in s.get_session("s2")) == [f"id{i}" for i in range(5)]
        if "fork" in multiprocessing.get_all_start_methods():
            for sid in ("s3", "s4"):
                assert [e.qa_id for e in s.get_session(sid)] == [f"id{i}" for i in range(50)]
    assert elapsed < 25, f"exiting took {elapsed:.1f}s"  # not stuck joining the writer


# -- write-behind, read-your-writes, durability ------------------------------------------


def test_read_your_writes_while_queued(slow_store: SessionStore) -> None:
    e = slow_store.record("s1", "q", "a")
    assert slow_store.pending == 1
    assert slow_store.get_session("s1") == [e]
    f = slow_store.record("s1", "q2", "a2")
    assert slow_store.get_entry("s1", f.qa_id) == f
    g = slow_store.record("s1", "q3", "a3")
    assert [x.qa_id for x in slow_store.get_session("s1", last_n=1)] == [g.qa_id]


def test_feedback_on_a_queued_turn(slow_store: SessionStore) -> None:
    e = slow_store.record("s1", "q", "a")
    assert slow_store.pending == 1
    assert slow_store.add_feedback("s1", e.qa_id, "quick", 5) is True
    f = slow_store.record("s1", "q2", "a2")
    assert slow_store.thumbs("s1", f.qa_id, up=False) is True
    g = slow_store.record("s1", "q3", "a3")
    assert slow_store.delete_feedback("s1", g.qa_id) is True
    assert [x.feedback_score for x in slow_store.get_session("s1")] == [5, 1, None]


@pytest.mark.slow
def test_read_your_writes_while_the_writer_thread_is_writing(store_dir: Path) -> None:
    # Reads timed to land while the background thread is in the middle of a write
    # must still see the turn (the write must not be "in flight" and invisible).
    s = SessionStore(store_dir, flush_interval=0.004)
    rng = random.Random(7)
    payload = "x" * 60_000  # large enough to make each write take a while
    try:
        for i in range(120):
            e = s.record("s1", f"q{i}", payload)
            time.sleep(rng.uniform(0.002, 0.008))
            if i % 2:
                assert s.add_feedback("s1", e.qa_id, feedback_score=3) is True, i
            else:
                assert s.get_session("s1", last_n=1)[0].qa_id == e.qa_id, i
    finally:
        s.close()


def test_background_writer_writes_without_any_call(store: SessionStore, store_dir: Path) -> None:
    e = store.record("s1", "q", "a")
    with SessionStore(store_dir) as other:
        deadline = time.monotonic() + 5
        while other.get_session("s1") != [e]:
            assert time.monotonic() < deadline, "queued turn never reached the disk"
            time.sleep(0.02)


@pytest.mark.slow
def test_a_busy_process_has_its_turns_written_within_flush_max_delay(store_dir: Path) -> None:
    """Turns recorded back to back are gathered into batches, but not held past the bound."""
    with (
        SessionStore(store_dir, flush_interval=0.01, flush_max_delay=0.2) as busy,
        SessionStore(store_dir) as other,
    ):
        first = busy.record("s1", "q0", "a").qa_id
        start = time.monotonic()
        seen_at = None
        i = 0
        while time.monotonic() - start < 1.5:  # never quiet for a whole flush_interval
            i += 1
            busy.record("s1", f"q{i}", "a")
            time.sleep(0.002)
            if seen_at is None and i % 25 == 0 and other.get_entry("s1", first) is not None:
                seen_at = time.monotonic() - start
        assert seen_at is not None, "nothing reached the backend while turns kept coming"
        assert seen_at < 0.2 + 1.0  # the bound, plus slack for a loaded machine
        assert len(busy.get_session("s1")) == i + 1


def test_write_behind_false_writes_before_returning(store_dir: Path) -> None:
    with SessionStore(store_dir, write_behind=False, flush_interval=10) as s:
        e = s.record("s1", "q", "a")
        assert s.pending == 0
        with SessionStore(store_dir, flush_interval=10) as other:
            assert other.pending == 0
            assert other.get_session("s1") == [e]
        # wait=False still queues on such a store
        f = s.record("s1", "q2", "a2", wait=False)
        assert s.pending == 1
        assert s.get_session("s1") == [e, f]


def test_record_wait_true_writes_before_returning(
    slow_store: SessionStore, store_dir: Path
) -> None:
    queued = slow_store.record("s1", "q0", "a0")
    assert slow_store.pending == 1
    e = slow_store.record("s1", "q1", "a1", wait=True)
    assert slow_store.pending == 0  # and it wrote what was queued first, in order
    with SessionStore(store_dir) as other:
        assert other.get_session("s1") == [queued, e]


def test_flush_and_close_put_queued_turns_on_disk(
    slow_store: SessionStore, store_dir: Path
) -> None:
    other = SessionStore(store_dir, flush_interval=10)
    try:
        ids = [slow_store.record("s1", f"q{i}", "a").qa_id for i in range(3)]
        assert slow_store.pending == 3
        assert other.get_session("s1") == []  # still only in slow_store's queue
        slow_store.flush()
        assert slow_store.pending == 0
        assert [e.qa_id for e in other.get_session("s1")] == ids
        more = slow_store.record("s1", "q3", "a").qa_id
        slow_store.close()
        assert slow_store.pending == 0
        assert [e.qa_id for e in other.get_session("s1")] == [*ids, more]
    finally:
        other.close()


def test_store_is_usable_after_close(store: SessionStore) -> None:
    a = store.record("s1", "q", "a")
    store.close()
    b = store.record("s1", "q2", "a2")
    assert store.get_session("s1") == [a, b]
    assert store.thumbs("s1", b.qa_id, up=True)
    store.close()
    assert store.get_session("s1")[1].feedback_score == 5


@pytest.mark.parametrize("pause", [0.0, 0.01, 0.03])
def test_close_returns_promptly(store_dir: Path, pause: float) -> None:
    s = SessionStore(store_dir)  # default flush_interval 0.05
    e = s.record("s1", "q", "a")
    time.sleep(pause)  # let the writer thread reach its gathering pause
    started = time.monotonic()
    s.close()
    assert time.monotonic() - started < 5
    with SessionStore(store_dir) as other:
        assert other.get_session("s1") == [e]


def test_context_manager_closes(store_dir: Path) -> None:
    with SessionStore(store_dir, flush_interval=10) as s:
        e = s.record("s1", "q", "a")
    assert s.pending == 0
    with SessionStore(store_dir) as other:
        assert other.get_session("s1") == [e]


# -- iter_entries ---------------------------------------------------------------------


def test_iter_entries_covers_every_user_and_session(slow_store: SessionStore) -> None:
    expected = set()
    for user in (None, "alice", "bob"):
        for sid in ("s1", "s2", "../../x"):
            expected.add(slow_store.record(sid, "q", "a", user=user).qa_id)
    got = list(slow_store.iter_entries())
    assert len(got) == 9
    assert {e.qa_id for e in got} == expected
    assert {(e.user_id, e.session_id) for e in got} == {
        (u, s) for u in (None, "alice", "bob") for s in ("s1", "s2", "../../x")
    }


# -- construction ------------------------------------------------------------------------


def test_constructor_does_no_io(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "store"
    s = SessionStore(path, ttl=10, max_entries=5, namespace="n")
    assert not path.exists()
    assert not (tmp_path / "deep").exists()
    s.record("s1", "q", "a", wait=True)
    assert path.is_dir()
    s.close()


def test_default_location_is_feedback_plugin_dir(_default_dir: Path) -> None:
    s = SessionStore()
    assert not _default_dir.exists()
    e = s.record("s1", "q", "a", wait=True)
    assert _default_dir.is_dir()
    s.close()
    with SessionStore(_default_dir) as same:
        assert same.get_session("s1") == [e]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttl": 0},
        {"ttl": -1},
        {"ttl": True},
        {"ttl": "10"},
        {"ttl": float("nan")},
        {"max_entries": 0},
        {"max_entries": -3},
        {"max_entries": 2.5},
        {"max_entries": True},
        {"max_entries": "3"},
        {"namespace": ""},
        {"namespace": 5},
        {"flush_interval": -0.1},
        {"flush_interval": "0.05"},
        {"flush_max_delay": float("nan")},
        {"flush_max_delay": -1},
        {"flush_max_delay": True},
    ],
)
def test_bad_configuration(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as info:
        SessionStore(tmp_path / "s", **kwargs)
    assert isinstance(info.value, ValueError)
    assert not (tmp_path / "s").exists()


def test_unsupported_url_scheme(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        SessionStore("http://example.invalid/store")


def test_redis_location() -> None:
    url = "redis://localhost:6379/0"
    try:
        s = SessionStore(url, namespace="test")  # validates, does no I/O
    except ConfigurationError as exc:  # no Redis backend (or no redis client) installed
        assert "redis" in str(exc).lower()
    else:
        assert "redis" in type(s.backend).__name__.lower()
        s.close()


@pytest.mark.parametrize("write_behind", [True, False])
def test_handler_turns_are_stored_exactly_as_record_stores_them(
    store_dir: Path, write_behind: bool
) -> None:
    """The handler's fast path builds the stored JSON itself: it must be ``to_json()``'s text."""
    from langchain_core.runnables import RunnableLambda

    from feedback_plugin import FeedbackCallbackHandler

    questions = ["How do I reset my password?", "naïve \ud800 question 🙂"]
    with SessionStore(store_dir, write_behind=write_behind) as s:
        handler = FeedbackCallbackHandler(s, user="\udc00u")
        chain = RunnableLambda(lambda q: f"answer to {q}")
        config: Any = {
            "callbacks": [handler],
            "metadata": {"session_id": "\ud83d-s", "prompt_version": 2},
            "tags": ["v2"],
        }
        before = datetime.now(timezone.utc)
        for question in questions:
            chain.invoke(question, config=config)
        entries = s.get_session("\ud83d-s", user="\udc00u")
        assert [(e.question, e.answer) for e in entries] == [
            (q, f"answer to {q}") for q in questions
        ]
        assert all(before <= e.time <= datetime.now(timezone.utc) for e in entries)
        assert entries[0].metadata == {
            "session_id": "\ud83d-s",
            "prompt_version": 2,
            "tags": ["v2"],
        }
        assert s.backend.read(("\udc00u", "\ud83d-s")) == [e.to_json() for e in entries]


def test_lone_surrogates_are_valid_ids_and_text(store: SessionStore) -> None:
    """'Any string is a valid session id' includes strings that are not valid UTF-8."""
    from feedback_plugin import PositiveMemoryRetriever

    sid = "\ud800-session"
    turn = store.record(sid, "reset password \udfff", "answer \ud83d", user="\udc00u")
    [entry] = store.get_session(sid, user="\udc00u")
    assert (entry.session_id, entry.question, entry.answer) == (
        sid,
        "reset password \udfff",
        "answer \ud83d",
    )
    assert store.get_session(sid) == []
    assert store.thumbs(sid, turn.qa_id, up=True, user="\udc00u")
    docs = PositiveMemoryRetriever(store=store, user="\udc00u", session_id=sid).invoke("password")
    assert [d.metadata["qa_id"] for d in docs] == [turn.qa_id]
