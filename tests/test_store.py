"""SessionStore: every behaviour of the contract (docs/api.md), on a real diskcache dir."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import random
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from feedback_plugin import InvalidFeedbackError, SessionQAEntry, SessionStore
from feedback_plugin.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[1]

BAD_SCORES: list[Any] = [0, 6, -1, 3.5, True, "5"]

ODD_IDS = [
    "../../x",
    "a:b*",
    "*",
    "..",
    ".",
    "/",
    "a/b",
    "a\\b",
    "x" * 500,
    "日本語 🎉🚀",
    "a\x00b",
    "\x00",
    "a\x00",
    "null",
    '"',
    '["s1"]',
    "s1 ",
    "S1",
    "s1",
    "%",
    "_",
    "s1;DROP TABLE Cache;--",
]


def snapshot(store: SessionStore, session_id: str, user: str | None = None) -> list[dict[str, Any]]:
    return [e.model_dump() for e in store.get_session(session_id, user=user)]


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


def test_record_returns_the_entry(store: SessionStore) -> None:
    before = datetime.now(timezone.utc)
    e = store.record(
        "s1",
        "What is 2+2?",
        "4",
        ["doc a", "doc b"],
        user="alice",
        metadata={"model": "fake", "tags": ["t"]},
        qa_id="run-1",
    )
    after = datetime.now(timezone.utc)
    assert isinstance(e, SessionQAEntry)
    assert (e.qa_id, e.session_id, e.question, e.answer) == ("run-1", "s1", "What is 2+2?", "4")
    assert e.context == ["doc a", "doc b"]
    assert e.user_id == "alice"
    assert e.metadata == {"model": "fake", "tags": ["t"]}
    assert e.feedback_score is None and e.feedback_text is None and e.feedback_time is None
    assert e.time.utcoffset() is not None and e.time.utcoffset().total_seconds() == 0
    assert before <= e.time <= after
    assert store.get_session("s1", user="alice") == [e]


def test_record_defaults(store: SessionStore) -> None:
    a = store.record("s1", "q", "a")
    b = store.record("s1", "q", "a")
    assert a.qa_id != b.qa_id
    uuid.UUID(a.qa_id)  # a fresh UUID by default
    assert a.context == [] and a.metadata == {} and a.user_id is None
    got = store.get_session("s1")
    assert got == [a, b]
    assert got[0].time.tzinfo is not None


def test_record_accepts_any_iterable_context(store: SessionStore) -> None:
    store.record("s1", "q", "a", (f"doc {i}" for i in range(3)))
    assert store.get_session("s1")[0].context == ["doc 0", "doc 1", "doc 2"]


def test_get_session_is_oldest_first(store: SessionStore) -> None:
    ids = [store.record("s1", f"q{i}", f"a{i}").qa_id for i in range(20)]
    got = store.get_session("s1")
    assert [e.qa_id for e in got] == ids
    assert [e.question for e in got] == [f"q{i}" for i in range(20)]
    times = [e.time for e in got]
    assert times == sorted(times)


def test_last_n(store: SessionStore) -> None:
    ids = [store.record("s1", f"q{i}", "a").qa_id for i in range(10)]
    assert [e.qa_id for e in store.get_session("s1", last_n=3)] == ids[-3:]
    assert [e.qa_id for e in store.get_session("s1", last_n=1)] == ids[-1:]
    assert [e.qa_id for e in store.get_session("s1", last_n=10)] == ids
    assert [e.qa_id for e in store.get_session("s1", last_n=50)] == ids
    assert store.get_session("s1", last_n=0) == []
    assert [e.qa_id for e in store.get_session("s1", last_n=None)] == ids


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_last_n_must_be_a_non_negative_int(store: SessionStore, bad: Any) -> None:
    store.record("s1", "q", "a")
    with pytest.raises(ValueError):
        store.get_session("s1", last_n=bad)


def test_unknown_session_is_empty(store: SessionStore) -> None:
    assert store.get_session("never-recorded") == []
    assert store.get_session("never-recorded", last_n=5) == []
    store.record("s1", "q", "a")
    assert store.get_session("s2") == []


def test_sessions_are_separate(store: SessionStore) -> None:
    a = store.record("s1", "q1", "a1")
    b = store.record("s2", "q2", "a2")
    assert store.get_session("s1") == [a]
    assert store.get_session("s2") == [b]


def test_recording_an_existing_qa_id_replaces_it_in_place(store: SessionStore) -> None:
    store.record("s1", "q0", "a0", qa_id="x0")
    store.record("s1", "q1", "a1", qa_id="x1")
    store.record("s1", "q2", "a2", qa_id="x2")
    store.record("s1", "q1 again", "a1 again", qa_id="x1")
    got = store.get_session("s1")
    assert [e.qa_id for e in got] == ["x0", "x1", "x2"]
    assert got[1].answer == "a1 again"


# -- feedback --------------------------------------------------------------------


def test_add_feedback_sets_text_score_and_time(store: SessionStore) -> None:
    e = store.record("s1", "q", "a")
    before = datetime.now(timezone.utc)
    assert store.add_feedback("s1", e.qa_id, "great answer", 4) is True
    got = store.get_session("s1")[0]
    assert got.feedback_text == "great answer"
    assert got.feedback_score == 4
    assert got.feedback_time is not None and got.feedback_time.tzinfo is not None
    assert got.feedback_time >= before
    # the turn itself is untouched
    assert (got.question, got.answer, got.time, got.qa_id) == (
        e.question,
        e.answer,
        e.time,
        e.qa_id,
    )


@pytest.mark.parametrize("score", [1, 2, 3, 4, 5])
def test_add_feedback_accepts_every_score(store: SessionStore, score: int) -> None:
    e = store.record("s1", "q", "a")
    assert store.add_feedback("s1", e.qa_id, feedback_score=score) is True
    assert store.get_session("s1")[0].feedback_score == score


def test_thumbs_up_and_down(store: SessionStore) -> None:
    e = store.record("s1", "q", "a")
    assert store.thumbs("s1", e.qa_id, up=True) is True
    assert store.get_session("s1")[0].feedback_score == 5
    assert store.thumbs("s1", e.qa_id, up=False, feedback_text="wrong after all") is True
    got = store.get_session("s1")[0]
    assert got.feedback_score == 1
    assert got.feedback_text == "wrong after all"


def test_thumbs_rejects_non_bool_up(store: SessionStore) -> None:
    e = store.record("s1", "q", "a")
    with pytest.raises(InvalidFeedbackError):
        store.thumbs("s1", e.qa_id, up="yes")  # type: ignore[arg-type]
    assert store.get_session("s1")[0].feedback_score is None


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


def test_adding_text_keeps_the_score(store: SessionStore) -> None:
    e = store.record("s1", "q", "a")
    assert store.thumbs("s1", e.qa_id, up=True)
    assert store.add_feedback("s1", e.qa_id, feedback_text="also polite")
    got = store.get_session("s1")[0]
    assert (got.feedback_score, got.feedback_text) == (5, "also polite")


def test_adding_score_keeps_the_text(store: SessionStore) -> None:
    e = store.record("s1", "q", "a")
    assert store.add_feedback("s1", e.qa_id, feedback_text="hmm")
    assert store.add_feedback("s1", e.qa_id, feedback_score=2)
    got = store.get_session("s1")[0]
    assert (got.feedback_score, got.feedback_text) == (2, "hmm")


def test_feedback_changes_only_the_target_entry(store: SessionStore) -> None:
    a = store.record("s1", "q1", "a1")
    b = store.record("s1", "q2", "a2")
    c = store.record("s2", "q3", "a3", qa_id=a.qa_id)  # same qa_id, other session
    assert store.add_feedback("s1", a.qa_id, "x", 4)
    assert store.get_session("s1")[1] == b
    assert store.get_session("s2") == [c]


def test_delete_feedback_clears_and_keeps_the_entry(store: SessionStore) -> None:
    e = store.record("s1", "q", "a", ["ctx"])
    other = store.record("s1", "q2", "a2")
    assert store.add_feedback("s1", e.qa_id, "good", 5)
    assert store.thumbs("s1", other.qa_id, up=True)
    assert store.delete_feedback("s1", e.qa_id) is True
    got = store.get_session("s1")
    assert len(got) == 2
    assert (got[0].qa_id, got[0].question, got[0].answer, got[0].context) == (
        e.qa_id,
        "q",
        "a",
        ["ctx"],
    )
    assert got[0].feedback_text is None and got[0].feedback_score is None
    assert got[0].feedback_time is not None
    assert got[1].feedback_score == 5  # the other turn keeps its rating


def test_delete_feedback_on_unrated_entry_is_true(store: SessionStore) -> None:
    e = store.record("s1", "q", "a")
    assert store.delete_feedback("s1", e.qa_id) is True
    assert store.get_session("s1")[0].feedback_score is None


def test_feedback_on_missing_session_or_entry_is_false(store: SessionStore) -> None:
    e = store.record("s1", "q", "a")
    assert store.add_feedback("nope", e.qa_id, "x", 3) is False
    assert store.add_feedback("s1", "no-such-qa", "x", 3) is False
    assert store.thumbs("nope", e.qa_id, up=True) is False
    assert store.thumbs("s1", "no-such-qa", up=False) is False
    assert store.delete_feedback("nope", e.qa_id) is False
    assert store.delete_feedback("s1", "no-such-qa") is False
    assert store.get_session("nope") == []  # nothing was created by the attempts
    assert store.get_session("s1") == [e]


@pytest.mark.parametrize("bad", BAD_SCORES)
def test_bad_score_raises_and_changes_nothing(store: SessionStore, bad: Any) -> None:
    e = store.record("s1", "q", "a")
    assert store.add_feedback("s1", e.qa_id, "keep me", 3)
    before = snapshot(store, "s1")
    with pytest.raises(InvalidFeedbackError) as info:
        store.add_feedback("s1", e.qa_id, "replacement text", bad)
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidFeedbackError):
        store.add_feedback("s1", e.qa_id, feedback_score=bad)
    assert snapshot(store, "s1") == before


@pytest.mark.parametrize("bad", BAD_SCORES)
def test_bad_score_raises_even_for_unknown_entries(store: SessionStore, bad: Any) -> None:
    with pytest.raises(InvalidFeedbackError):
        store.add_feedback("nope", "nope", "t", bad)


@pytest.mark.parametrize("text", [None, "", "   "])
def test_neither_text_nor_score_raises_and_changes_nothing(
    store: SessionStore, text: str | None
) -> None:
    e = store.record("s1", "q", "a")
    assert store.thumbs("s1", e.qa_id, up=True, feedback_text="kept")
    before = snapshot(store, "s1")
    with pytest.raises(InvalidFeedbackError):
        store.add_feedback("s1", e.qa_id, text)
    with pytest.raises(InvalidFeedbackError):
        store.add_feedback("s1", e.qa_id, feedback_text=text, feedback_score=None)
    assert snapshot(store, "s1") == before


def test_empty_session_id_raises_value_error(store: SessionStore) -> None:
    e = store.record("s1", "q", "a")
    before = snapshot(store, "s1")
    calls = [
        lambda: store.record("", "q", "a"),
        lambda: store.get_session(""),
        lambda: store.add_feedback("", e.qa_id, "t", 4),
        lambda: store.delete_feedback("", e.qa_id),
        lambda: store.thumbs("", e.qa_id, up=True),
        lambda: store.get_entry("", e.qa_id),
        lambda: store.delete_session(""),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    assert snapshot(store, "s1") == before
    assert [x.qa_id for x in store.iter_entries()] == [e.qa_id]


def test_empty_qa_id_raises_value_error(store: SessionStore) -> None:
    with pytest.raises(ValueError):
        store.add_feedback("s1", "", "t", 4)
    with pytest.raises(ValueError):
        store.record("s1", "q", "a", qa_id="")
    assert store.get_session("s1") == []


# -- user scoping -----------------------------------------------------------------


def test_user_scoping(store: SessionStore) -> None:
    e = store.record("s1", "alice's question", "alice's answer", user="alice")
    before = snapshot(store, "s1", user="alice")
    for other in ("bob", None, "Alice", "alice "):
        assert store.get_session("s1", user=other) == []
        assert store.get_session("s1", user=other, last_n=5) == []
        assert store.get_entry("s1", e.qa_id, user=other) is None
        assert store.add_feedback("s1", e.qa_id, "hacked", 1, user=other) is False
        assert store.thumbs("s1", e.qa_id, up=False, user=other) is False
        assert store.delete_feedback("s1", e.qa_id, user=other) is False
        assert store.delete_session("s1", user=other) == 0
    assert snapshot(store, "s1", user="alice") == before
    assert store.thumbs("s1", e.qa_id, up=True, user="alice") is True
    assert store.get_session("s1", user="alice")[0].feedback_score == 5


def test_alice_cannot_change_an_unowned_turn(store: SessionStore) -> None:
    e = store.record("s1", "q", "a")  # user=None
    assert store.add_feedback("s1", e.qa_id, "x", 2, user="alice") is False
    assert store.get_session("s1", user="alice") == []
    assert store.get_session("s1")[0].feedback_score is None


def test_same_session_id_for_two_users_are_two_sessions(store: SessionStore) -> None:
    a = store.record("shared", "qa", "aa", user="alice")
    b = store.record("shared", "qb", "ab", user="bob")
    n = store.record("shared", "qn", "an")
    assert store.get_session("shared", user="alice") == [a]
    assert store.get_session("shared", user="bob") == [b]
    assert store.get_session("shared") == [n]
    assert store.delete_session("shared", user="bob") == 1
    assert store.get_session("shared", user="alice") == [a]
    assert store.get_session("shared") == [n]


@pytest.mark.parametrize("user", ["null", "../../u", "a:b*", "日本 🎉", "a\x00b"])
def test_odd_user_ids_are_scoped_too(store: SessionStore, user: str) -> None:
    e = store.record("s1", "q", "a", user=user)
    assert store.get_session("s1", user=user) == [e]
    assert store.get_session("s1") == []
    assert store.thumbs("s1", e.qa_id, up=True, user=user) is True


def test_empty_user_is_rejected(store: SessionStore) -> None:
    with pytest.raises(ValueError):
        store.record("s1", "q", "a", user="")
    with pytest.raises(ValueError):
        store.get_session("s1", user="")


# -- odd ids, large and unusual payloads ----------------------------------------------


def test_odd_session_ids_do_not_collide(
    store: SessionStore, store_dir: Path, tmp_path: Path
) -> None:
    assert len(set(ODD_IDS)) == len(ODD_IDS)
    entries = {sid: store.record(sid, f"question for {sid!r}", sid) for sid in ODD_IDS}
    for sid, e in entries.items():
        got = store.get_session(sid)
        assert got == [e], sid
        assert store.get_entry(sid, e.qa_id) == e
    # feedback and deletion also stay inside their own session
    for i, (sid, e) in enumerate(entries.items()):
        assert store.add_feedback(sid, e.qa_id, sid, i % 5 + 1) is True
    for i, (sid, _e) in enumerate(entries.items()):
        got = store.get_session(sid)
        assert len(got) == 1 and got[0].feedback_text == sid and got[0].feedback_score == i % 5 + 1
    assert store.delete_session("*") == 1
    assert store.delete_session("%") == 1
    assert store.delete_session("_") == 1
    for sid in ODD_IDS:
        assert len(store.get_session(sid)) == (0 if sid in ("*", "%", "_") else 1), sid
    store.close()
    # nothing was written outside the store directory
    outside = [p for p in tmp_path.rglob("*") if store_dir not in p.parents and p != store_dir]
    assert outside == []
    assert not (store_dir / ".." / ".." / "x").resolve().exists()
    assert not (store_dir / ".." / "x").resolve().exists()


def test_odd_ids_on_a_fresh_store_object(store: SessionStore, store_dir: Path) -> None:
    for sid in ODD_IDS:
        store.record(sid, "q", sid, qa_id=sid)
    store.close()
    other = SessionStore(store_dir)
    try:
        for sid in ODD_IDS:
            got = other.get_session(sid)
            assert [(e.qa_id, e.answer) for e in got] == [(sid, sid)]
    finally:
        other.close()


@pytest.mark.parametrize("write_behind", [True, False])
def test_one_megabyte_answer(store_dir: Path, write_behind: bool) -> None:
    big = "".join(f"line {i}: é🎉\n" for i in range(100_000))[: 1024 * 1024]
    assert len(big) == 1024 * 1024
    with SessionStore(store_dir, write_behind=write_behind) as s:
        e = s.record("s1", "big?", big, [big[:1000]])
        assert s.add_feedback("s1", e.qa_id, "long", 4)
        got = s.get_session("s1")
    assert len(got) == 1
    assert got[0].answer == big
    assert got[0].feedback_score == 4
    with SessionStore(store_dir) as s2:
        assert s2.get_session("s1")[0].answer == big


def test_nul_and_emoji_round_trip(store: SessionStore, store_dir: Path) -> None:
    q = 'what\x00is \U0001f600 \u202e\ud7ff \n\t\\ "quoted" \''
    a = "\x00" * 3 + "answer 🎉🚀 日本語 \x01\x1f \r\n"
    ctx = ["doc\x00one 😀", "", "\x00"]
    meta = {"k\x00": "v\x00🎉", "nested": {"list": ["\x00", 1, 2.5, None, True]}}
    e = store.record("s\x00🎉", q, a, ctx, user="u\x00😀", metadata=meta)
    assert store.add_feedback("s\x00🎉", e.qa_id, "fb\x00 👍", 5, user="u\x00😀")
    store.close()
    with SessionStore(store_dir) as other:
        got = other.get_session("s\x00🎉", user="u\x00😀")
    assert len(got) == 1
    assert (got[0].question, got[0].answer, got[0].context, got[0].metadata) == (q, a, ctx, meta)
    assert got[0].feedback_text == "fb\x00 👍"
    assert got[0].user_id == "u\x00😀"


# -- persistence across processes -------------------------------------------------------


def test_turns_recorded_in_another_process_are_read_here(store_dir: Path) -> None:
    run_python(
        """
        import sys
        from feedback_plugin import SessionStore
        s = SessionStore(sys.argv[1])
        ids = [s.record("s1", f"q{i}", f"a{i}", [f"c{i}"], user="alice").qa_id for i in range(3)]
        assert s.thumbs("s1", ids[1], up=True, user="alice")
        s.close()
        """,
        str(store_dir),
    )
    with SessionStore(store_dir) as s:
        got = s.get_session("s1", user="alice")
    assert [e.question for e in got] == ["q0", "q1", "q2"]
    assert [e.context for e in got] == [["c0"], ["c1"], ["c2"]]
    assert [e.feedback_score for e in got] == [None, 5, None]
    assert all(e.time.tzinfo is not None for e in got)


def test_turns_recorded_here_are_read_in_another_process(store_dir: Path) -> None:
    with SessionStore(store_dir) as s:
        a = s.record("s1", "q0", "a0 🎉", user="bob")
        s.record("s1", "q1", "a1", user="bob")
        assert s.add_feedback("s1", a.qa_id, "nice", 4, user="bob")
    proc = run_python(
        """
        import json, sys
        from feedback_plugin import SessionStore
        s = SessionStore(sys.argv[1])
        print(json.dumps([e.model_dump(mode="json") for e in s.get_session("s1", user="bob")]))
        print(json.dumps(s.get_session("s1")))
        """,
        str(store_dir),
    )
    lines = proc.stdout.strip().splitlines()
    rows = json.loads(lines[0])
    assert [r["question"] for r in rows] == ["q0", "q1"]
    assert rows[0]["answer"] == "a0 🎉"
    assert (rows[0]["feedback_text"], rows[0]["feedback_score"]) == ("nice", 4)
    assert json.loads(lines[1]) == []  # user=None sees nothing of bob's


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


# -- retention ---------------------------------------------------------------------------


def test_ttl_expires_turns(store_dir: Path) -> None:
    with SessionStore(store_dir, ttl=0.5) as s:
        a = s.record("s1", "q", "a")
        b = s.record("s1", "q2", "a2")
        assert s.get_session("s1") == [a, b]
        time.sleep(0.7)
        assert s.get_session("s1") == []
        assert s.get_session("s1", last_n=1) == []
        assert s.get_entry("s1", a.qa_id) is None
        assert s.add_feedback("s1", a.qa_id, "late", 3) is False
        assert s.delete_feedback("s1", b.qa_id) is False
        assert list(s.iter_entries()) == []
        c = s.record("s1", "q3", "a3")
        assert s.get_session("s1") == [c]
        assert s.get_session("s1", last_n=5) == [c]


def test_feedback_does_not_extend_ttl(store_dir: Path) -> None:
    with SessionStore(store_dir, ttl=0.6) as s:
        e = s.record("s1", "q", "a", wait=True)
        time.sleep(0.3)
        assert s.thumbs("s1", e.qa_id, up=True)
        assert s.get_session("s1")[0].feedback_score == 5
        time.sleep(0.45)  # 0.75 s after recording, 0.45 s after feedback
        assert s.get_session("s1") == []


def test_max_entries_evicts_the_oldest(store_dir: Path) -> None:
    with SessionStore(store_dir, max_entries=3) as s:
        ids = [s.record("s1", f"q{i}", "a").qa_id for i in range(5)]
        other = s.record("s2", "q", "a")
        got = s.get_session("s1")
        assert [e.qa_id for e in got] == ids[2:]
        assert [e.qa_id for e in s.get_session("s1", last_n=2)] == ids[3:]
        assert s.get_session("s2") == [other]  # per session
        assert s.add_feedback("s1", ids[0], "gone", 3) is False
        assert s.thumbs("s1", ids[1], up=True) is False
        assert s.delete_feedback("s1", ids[0]) is False
        assert s.get_entry("s1", ids[0]) is None
        assert s.add_feedback("s1", ids[2], "kept", 4) is True
        assert sorted(e.qa_id for e in s.iter_entries()) == sorted([*ids[2:], other.qa_id])
        assert s.delete_session("s1") == 3


def test_max_entries_across_flushes_and_replacements(store_dir: Path) -> None:
    with SessionStore(store_dir, max_entries=2, write_behind=False) as s:
        s.record("s1", "q0", "a", qa_id="x0")
        s.record("s1", "q1", "a", qa_id="x1")
        s.record("s1", "q1b", "a", qa_id="x1")  # replacing does not evict
        assert [e.qa_id for e in s.get_session("s1")] == ["x0", "x1"]
        s.record("s1", "q2", "a", qa_id="x2")
        assert [e.qa_id for e in s.get_session("s1")] == ["x1", "x2"]
    with SessionStore(store_dir, max_entries=2) as again:
        again.record("s1", "q3", "a", qa_id="x3")
        assert [e.qa_id for e in again.get_session("s1")] == ["x2", "x3"]


# -- namespaces --------------------------------------------------------------------------


def test_namespaces_share_a_directory_without_mixing(store_dir: Path) -> None:
    a = SessionStore(store_dir, namespace="app-a")
    b = SessionStore(store_dir, namespace="app-b")
    plain = SessionStore(store_dir)
    try:
        ea = a.record("s1", "qa", "aa", qa_id="same")
        eb = b.record("s1", "qb", "ab", qa_id="same")
        assert a.get_session("s1") == [ea]
        assert b.get_session("s1") == [eb]
        assert plain.get_session("s1") == []
        assert b.thumbs("s1", "same", up=True)
        assert a.get_session("s1")[0].feedback_score is None
        assert plain.add_feedback("s1", "same", "x", 1) is False
        assert b.delete_session("s1") == 1
        assert a.get_session("s1") == [ea]
        assert [e.qa_id for e in a.iter_entries()] == ["same"]
        assert list(plain.iter_entries()) == []
    finally:
        for s in (a, b, plain):
            s.close()


# -- delete_session / get_entry / iter_entries -------------------------------------------


def test_delete_session(store: SessionStore) -> None:
    ids = [store.record("s1", f"q{i}", "a").qa_id for i in range(4)]
    keep = store.record("s2", "q", "a")
    assert store.delete_session("s1") == 4
    assert store.get_session("s1") == []
    assert store.get_entry("s1", ids[0]) is None
    assert store.add_feedback("s1", ids[0], "x", 3) is False
    assert store.get_session("s2") == [keep]
    assert store.delete_session("s1") == 0
    assert store.delete_session("never") == 0
    fresh = store.record("s1", "new", "a")
    assert store.get_session("s1") == [fresh]


def test_delete_session_includes_queued_turns(slow_store: SessionStore, store_dir: Path) -> None:
    slow_store.record("s1", "q", "a")
    slow_store.record("s1", "q", "a")
    assert slow_store.delete_session("s1") == 2
    slow_store.close()
    with SessionStore(store_dir) as other:
        assert other.get_session("s1") == []


def test_get_entry(store: SessionStore) -> None:
    e = store.record("s1", "q", "a", user="alice")
    assert store.get_entry("s1", e.qa_id, user="alice") == e
    assert store.get_entry("s1", "missing", user="alice") is None
    assert store.get_entry("s2", e.qa_id, user="alice") is None
    assert store.add_feedback("s1", e.qa_id, "t", 2, user="alice")
    got = store.get_entry("s1", e.qa_id, user="alice")
    assert got is not None and (got.feedback_text, got.feedback_score) == ("t", 2)


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
