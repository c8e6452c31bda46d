"""SessionStore's contract (docs/api.md), run against every backend.

Each test takes ``stores`` / ``backend_store`` from conftest.py and so runs
once on diskcache and once on a real Redis server.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from feedback_plugin import (
    InvalidFeedbackError,
    PositiveMemoryRetriever,
    SessionQAEntry,
    SessionStore,
)
from feedback_plugin.errors import InvalidIdError

from .conftest import Stores

BAD_SCORES: list[Any] = [0, 6, -1, 3.5, 4.0, True, False, "5", None]

ODD_IDS = [
    "../../x",
    "../x",
    "a:b*",
    "a:b",
    "*",
    "?",
    "[a]",
    "a",
    "x" * 500,
    "\x00",
    "a\x00b",
    "日本語 🎉🚀",
    "🎉",
    "/",
    "a/b",
    "a\\b",
    "..",
    ".",
    "a\x00",
    "%",
    "_",
    '"',
    '["s1"]',
    "null",
    "s1",
    "s1 ",
    "S1",
    "fp:*",
    "fp:bnVsbA:l:*",
    "\r\n",
    " ",
    "s1;DROP TABLE Cache;--",
]


def dump(store: SessionStore, session_id: str, user: str | None = None) -> list[dict[str, Any]]:
    return [e.model_dump() for e in store.get_session(session_id, user=user)]


# -- record / get_session ------------------------------------------------------------


def test_record_returns_the_entry_and_get_session_returns_it(backend_store: SessionStore) -> None:
    before = datetime.now(timezone.utc)
    e = backend_store.record(
        "s1",
        "What is 2+2?",
        "4",
        ["doc one", "doc two"],
        user="alice",
        metadata={"model": "fake", "tags": ["a", "b"], "n": 1, "x": None},
        qa_id="qa-1",
    )
    after = datetime.now(timezone.utc)
    assert isinstance(e, SessionQAEntry)
    assert (e.qa_id, e.session_id, e.question, e.answer) == ("qa-1", "s1", "What is 2+2?", "4")
    assert e.context == ["doc one", "doc two"]
    assert e.user_id == "alice"
    assert e.metadata == {"model": "fake", "tags": ["a", "b"], "n": 1, "x": None}
    assert e.time.tzinfo is not None and e.time.utcoffset() == timezone.utc.utcoffset(None)
    assert before <= e.time <= after
    assert (e.feedback_text, e.feedback_score, e.feedback_time) == (None, None, None)
    assert backend_store.get_session("s1", user="alice") == [e]


def test_record_defaults(backend_store: SessionStore) -> None:
    e = backend_store.record("s1", "q", "a")
    f = backend_store.record("s1", "q", "a")
    assert str(uuid.UUID(e.qa_id)) == e.qa_id
    assert f.qa_id != e.qa_id  # a fresh id per turn
    assert (e.context, e.metadata, e.user_id) == ([], {}, None)
    assert backend_store.get_session("s1") == [e, f]


def test_get_session_is_oldest_first_and_last_n(backend_store: SessionStore) -> None:
    entries = [backend_store.record("s1", f"q{i}", f"a{i}") for i in range(7)]
    assert backend_store.get_session("s1") == entries
    assert [e.time for e in entries] == sorted(e.time for e in entries)
    assert backend_store.get_session("s1", last_n=None) == entries
    assert backend_store.get_session("s1", last_n=3) == entries[-3:]
    assert backend_store.get_session("s1", last_n=1) == entries[-1:]
    assert backend_store.get_session("s1", last_n=7) == entries
    assert backend_store.get_session("s1", last_n=100) == entries
    assert backend_store.get_session("s1", last_n=0) == []


def test_order_holds_across_synchronous_and_queued_writes(stores: Stores) -> None:
    store = stores(flush_interval=10)
    ids = []
    for i in range(6):
        ids.append(store.record("s1", f"q{i}", "a", wait=i % 2 == 0).qa_id)
    assert [e.qa_id for e in store.get_session("s1")] == ids
    assert [e.qa_id for e in stores().get_session("s1")] == ids


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_bad_last_n_is_a_value_error(backend_store: SessionStore, bad: Any) -> None:
    backend_store.record("s1", "q", "a")
    with pytest.raises(ValueError):
        backend_store.get_session("s1", last_n=bad)


def test_unknown_session_is_empty(backend_store: SessionStore) -> None:
    assert backend_store.get_session("nope") == []
    assert backend_store.get_session("nope", last_n=3) == []
    assert backend_store.get_session("nope", user="alice") == []
    backend_store.record("s1", "q", "a")
    assert backend_store.get_session("s2") == []
    assert backend_store.get_entry("s1", "nope") is None


def test_recording_an_existing_qa_id_replaces_it_in_place(backend_store: SessionStore) -> None:
    a = backend_store.record("s1", "q0", "a0", qa_id="x0")
    backend_store.record("s1", "q1", "a1", qa_id="x1")
    c = backend_store.record("s1", "q2", "a2", qa_id="x2")
    b2 = backend_store.record("s1", "q1 again", "a1 again", qa_id="x1")
    assert backend_store.get_session("s1") == [a, b2, c]


def test_sessions_are_separate(backend_store: SessionStore) -> None:
    a = backend_store.record("s1", "q", "a")
    b = backend_store.record("s2", "q", "a")
    assert backend_store.get_session("s1") == [a]
    assert backend_store.get_session("s2") == [b]


# -- feedback ------------------------------------------------------------------------


def test_add_feedback_sets_text_score_and_time(backend_store: SessionStore) -> None:
    e = backend_store.record("s1", "q", "a")
    before = datetime.now(timezone.utc)
    assert backend_store.add_feedback("s1", e.qa_id, "great", 5) is True
    got = backend_store.get_entry("s1", e.qa_id)
    assert got is not None
    assert (got.feedback_text, got.feedback_score) == ("great", 5)
    assert got.feedback_time is not None and got.feedback_time.tzinfo is not None
    assert got.feedback_time >= before >= got.time
    # only feedback changed
    assert got.model_dump(exclude={"feedback_text", "feedback_score", "feedback_time"}) == (
        e.model_dump(exclude={"feedback_text", "feedback_score", "feedback_time"})
    )


@pytest.mark.parametrize("score", [1, 2, 3, 4, 5])
def test_every_score_is_accepted(backend_store: SessionStore, score: int) -> None:
    e = backend_store.record("s1", "q", "a")
    assert backend_store.add_feedback("s1", e.qa_id, feedback_score=score) is True
    assert backend_store.get_session("s1")[0].feedback_score == score


def test_partial_updates_keep_the_other_field(backend_store: SessionStore) -> None:
    e = backend_store.record("s1", "q", "a")
    assert backend_store.thumbs("s1", e.qa_id, up=True)
    assert backend_store.add_feedback("s1", e.qa_id, feedback_text="thanks") is True
    got = backend_store.get_session("s1")[0]
    assert (got.feedback_text, got.feedback_score) == ("thanks", 5)
    first_time = got.feedback_time
    assert backend_store.add_feedback("s1", e.qa_id, feedback_score=2) is True
    got = backend_store.get_session("s1")[0]
    assert (got.feedback_text, got.feedback_score) == ("thanks", 2)
    assert got.feedback_time is not None and first_time is not None
    assert got.feedback_time >= first_time


def test_thumbs_up_and_down(backend_store: SessionStore) -> None:
    e = backend_store.record("s1", "q", "a")
    assert backend_store.thumbs("s1", e.qa_id, up=True) is True
    assert backend_store.get_session("s1")[0].feedback_score == 5
    assert backend_store.thumbs("s1", e.qa_id, False, "wrong") is True
    got = backend_store.get_session("s1")[0]
    assert (got.feedback_score, got.feedback_text) == (1, "wrong")


@pytest.mark.parametrize("bad", [1, 0, None, "yes"])
def test_thumbs_needs_a_bool(backend_store: SessionStore, bad: Any) -> None:
    e = backend_store.record("s1", "q", "a")
    before = dump(backend_store, "s1")
    with pytest.raises(InvalidFeedbackError):
        backend_store.thumbs("s1", e.qa_id, up=bad)
    assert dump(backend_store, "s1") == before


def test_delete_feedback_clears_and_keeps_the_entry(backend_store: SessionStore) -> None:
    e = backend_store.record("s1", "q", "a", ["ctx"])
    other = backend_store.record("s1", "q2", "a2")
    assert backend_store.add_feedback("s1", e.qa_id, "nice", 4)
    assert backend_store.add_feedback("s1", other.qa_id, "meh", 3)
    assert backend_store.delete_feedback("s1", e.qa_id) is True
    got = backend_store.get_session("s1")
    assert [g.qa_id for g in got] == [e.qa_id, other.qa_id]
    assert (got[0].feedback_text, got[0].feedback_score) == (None, None)
    assert (got[0].question, got[0].answer, got[0].context) == ("q", "a", ["ctx"])
    assert got[0].feedback_time is not None  # the deletion is itself a feedback change
    assert (got[1].feedback_text, got[1].feedback_score) == ("meh", 3)
    assert backend_store.delete_feedback("s1", e.qa_id) is True  # idempotent on an existing turn


def test_feedback_on_a_missing_session_or_entry_is_false(backend_store: SessionStore) -> None:
    e = backend_store.record("s1", "q", "a")
    before = dump(backend_store, "s1")
    assert backend_store.add_feedback("nope", e.qa_id, "x", 3) is False
    assert backend_store.add_feedback("s1", "nope", "x", 3) is False
    assert backend_store.thumbs("nope", e.qa_id, up=True) is False
    assert backend_store.thumbs("s1", "nope", up=True) is False
    assert backend_store.delete_feedback("nope", e.qa_id) is False
    assert backend_store.delete_feedback("s1", "nope") is False
    assert dump(backend_store, "s1") == before
    assert backend_store.get_session("nope") == []


@pytest.mark.parametrize("bad", BAD_SCORES)
def test_bad_score_raises_and_changes_nothing(backend_store: SessionStore, bad: Any) -> None:
    e = backend_store.record("s1", "q", "a")
    assert backend_store.add_feedback("s1", e.qa_id, "kept", 4)
    before = dump(backend_store, "s1")
    with pytest.raises(InvalidFeedbackError) as info:
        backend_store.add_feedback("s1", e.qa_id, None if bad is None else "new text", bad)
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidFeedbackError):  # a score alone, too
        backend_store.add_feedback("s1", e.qa_id, feedback_score=bad)
    assert dump(backend_store, "s1") == before
    with pytest.raises(InvalidFeedbackError):  # also before looking the turn up
        backend_store.add_feedback("nope", "nope", "x", 9)
    with pytest.raises(InvalidFeedbackError):
        backend_store.add_feedback("nope", "nope", None if bad is None else "x", bad)


@pytest.mark.parametrize("text", [None, "", "   ", "\n\t"])
def test_neither_text_nor_score_raises_and_changes_nothing(
    backend_store: SessionStore, text: str | None
) -> None:
    e = backend_store.record("s1", "q", "a")
    assert backend_store.thumbs("s1", e.qa_id, up=True)
    before = dump(backend_store, "s1")
    with pytest.raises(InvalidFeedbackError):
        backend_store.add_feedback("s1", e.qa_id, text, None)
    assert dump(backend_store, "s1") == before


def test_empty_ids_are_value_errors_and_change_nothing(backend_store: SessionStore) -> None:
    e = backend_store.record("s1", "q", "a")
    before = dump(backend_store, "s1")
    calls = [
        lambda: backend_store.record("", "q", "a"),
        lambda: backend_store.get_session(""),
        lambda: backend_store.add_feedback("", e.qa_id, "x", 3),
        lambda: backend_store.add_feedback("s1", "", "x", 3),
        lambda: backend_store.delete_feedback("", e.qa_id),
        lambda: backend_store.thumbs("", e.qa_id, up=True),
        lambda: backend_store.get_entry("", e.qa_id),
        lambda: backend_store.record("s1", "q", "a", qa_id=""),
        lambda: backend_store.record("s1", "q", "a", user=""),
        lambda: backend_store.get_session("s1", user=""),
        lambda: backend_store.delete_session(""),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    with pytest.raises(InvalidIdError):
        backend_store.record(None, "q", "a")  # type: ignore[arg-type]
    assert dump(backend_store, "s1") == before
    assert backend_store.list_sessions() == ["s1"]


# -- users ---------------------------------------------------------------------------


def test_user_scoping(backend_store: SessionStore) -> None:
    s = backend_store
    e = s.record("s1", "q", "alice's answer", user="alice")
    assert s.get_session("s1", user="alice") == [e]
    for user in (None, "bob", "Alice", "alice "):
        assert s.get_session("s1", user=user) == []
        assert s.get_session("s1", user=user, last_n=5) == []
        assert s.get_entry("s1", e.qa_id, user=user) is None
        assert s.add_feedback("s1", e.qa_id, "hack", 1, user=user) is False
        assert s.thumbs("s1", e.qa_id, up=False, user=user) is False
        assert s.delete_feedback("s1", e.qa_id, user=user) is False
        assert s.delete_session("s1", user=user) == 0
    assert s.get_session("s1", user="alice") == [e]
    assert s.thumbs("s1", e.qa_id, up=True, user="alice") is True
    assert s.get_session("s1", user="alice")[0].feedback_score == 5


def test_same_session_id_for_two_users_is_two_sessions(backend_store: SessionStore) -> None:
    s = backend_store
    a = s.record("s1", "qa", "aa", user="alice", qa_id="same")
    b = s.record("s1", "qb", "ab", user="bob", qa_id="same")
    n = s.record("s1", "qn", "an", qa_id="same")
    assert s.get_session("s1", user="alice") == [a]
    assert s.get_session("s1", user="bob") == [b]
    assert s.get_session("s1") == [n]
    assert s.thumbs("s1", "same", up=True, user="bob")
    assert s.get_session("s1", user="alice")[0].feedback_score is None
    assert s.get_session("s1")[0].feedback_score is None
    assert s.list_sessions(user="alice") == ["s1"]
    assert s.delete_session("s1", user="bob") == 1
    assert s.get_session("s1", user="alice") == [a]
    assert s.get_session("s1") == [n]
    assert s.list_sessions(user="bob") == []


@pytest.mark.parametrize("user", ["null", "None", '"alice"', "*", "../alice", "a:b", "\x00", "🎉"])
def test_odd_user_ids_are_scoped(backend_store: SessionStore, user: str) -> None:
    s = backend_store
    e = s.record("s1", "q", "a", user=user)
    s.record("s1", "q", "a", user="alice")
    assert s.get_session("s1", user=user) == [e]
    assert s.get_session("s1") == []
    assert s.thumbs("s1", e.qa_id, up=True) is False
    assert s.thumbs("s1", e.qa_id, up=True, user=user) is True
    assert [x.feedback_score for x in s.get_session("s1", user="alice")] == [None]


# -- odd ids, big and unusual payloads ---------------------------------------------------


def test_odd_session_ids_never_collide(stores: Stores, tmp_path: Path) -> None:
    assert len(set(ODD_IDS)) == len(ODD_IDS)
    before = stores.redis_keys() if stores.is_redis else set()
    store = stores()
    entries = {sid: store.record(sid, f"question for {sid!r}", sid, qa_id=sid) for sid in ODD_IDS}
    for sid, e in entries.items():
        assert store.get_session(sid) == [e], sid
        assert store.get_entry(sid, sid) == e
    for i, sid in enumerate(ODD_IDS):
        assert store.add_feedback(sid, sid, f"fb {sid}", i % 5 + 1) is True
    for i, sid in enumerate(ODD_IDS):
        got = store.get_session(sid)
        assert [(g.qa_id, g.feedback_text, g.feedback_score) for g in got] == [
            (sid, f"fb {sid}", i % 5 + 1)
        ]
    assert sorted(store.list_sessions()) == sorted(ODD_IDS)
    gone = {"*", "?", "[a]", "fp:*", "%", "_"}  # glob, Redis and SQL LIKE patterns
    for pattern in gone:
        assert store.delete_session(pattern) == 1
    for sid in ODD_IDS:
        assert len(store.get_session(sid)) == (0 if sid in gone else 1), sid
    # a fresh store object reads the same
    again = stores()
    for sid in ODD_IDS:
        if sid not in gone:
            assert [(g.qa_id, g.answer) for g in again.get_session(sid)] == [(sid, sid)]
    store.flush()
    if stores.is_redis:
        assert stores.redis_keys() - before, "nothing was written"
        assert stores.keys_outside(before, store) == []
    else:
        outside = [p for p in tmp_path.rglob("*") if Path(stores.location) not in (p, *p.parents)]
        assert outside == []
        assert not (Path(stores.location) / ".." / ".." / "x").resolve().exists()
        assert not (Path(stores.location) / ".." / "x").resolve().exists()


@pytest.mark.parametrize("write_behind", [True, False])
def test_one_megabyte_answer(stores: Stores, write_behind: bool) -> None:
    big = "".join(f"line {i}: é🎉\n" for i in range(100_000))[: 1024 * 1024]
    assert len(big) == 1024 * 1024
    store = stores(write_behind=write_behind)
    e = store.record("s1", "big?", big, [big[:1000], big])
    assert store.add_feedback("s1", e.qa_id, "long", 4)
    got = store.get_session("s1")
    assert len(got) == 1
    assert got[0].answer == big and got[0].context == [big[:1000], big]
    assert got[0].feedback_score == 4
    assert stores().get_session("s1")[0].answer == big
    assert store.get_entry("s1", e.qa_id) == got[0]
    # a small turn that a long correction makes big (diskcache: from a row to a file)
    small = store.record("s1", "small?", "a", wait=True)
    assert store.rate("s1", small.qa_id, correction=big).correction == big
    both = store.get_many([("s1", small.qa_id), ("s1", e.qa_id)])
    assert [b.correction if b else None for b in both] == [big, None]
    assert store.rate("s1", small.qa_id, feedback_score=5).correction == big  # stays whole


def test_nul_and_emoji_round_trip(stores: Stores) -> None:
    q = 'what\x00is \U0001f600 \u202e\ud7ff \n\t\\ "quoted" \''
    a = "\x00" * 3 + "answer 🎉🚀 日本語 \x01\x1f \r\n"
    ctx = ["doc\x00one 😀", "", "\x00"]
    meta = {"k\x00": "v\x00🎉", "nested": {"list": ["\x00", 1, 2.5, None, True]}}
    store = stores()
    e = store.record("s\x00🎉", q, a, ctx, user="u\x00😀", metadata=meta)
    assert store.add_feedback("s\x00🎉", e.qa_id, "fb\x00 👍", 5, user="u\x00😀")
    store.close()
    got = stores().get_session("s\x00🎉", user="u\x00😀")
    assert len(got) == 1
    assert (got[0].question, got[0].answer, got[0].context, got[0].metadata) == (q, a, ctx, meta)
    assert (got[0].feedback_text, got[0].user_id) == ("fb\x00 👍", "u\x00😀")


# -- retention -----------------------------------------------------------------------


def _warm_up(s: SessionStore) -> None:
    """Open the backend and the memory index before timing anything (slow on a busy box)."""
    w = s.record("warm-up", "q", "a", wait=True)
    assert s.thumbs("warm-up", w.qa_id, up=True)
    assert s.delete_session("warm-up") == 1


@pytest.mark.slow
def test_ttl_expires_turns(stores: Stores) -> None:
    s = stores(ttl=1.0)
    _warm_up(s)
    a = s.record("s1", "q", "a")
    b = s.record("s1", "q2", "a2")
    assert s.get_session("s1") == [a, b]
    time.sleep(1.2)
    assert s.get_session("s1") == []
    assert s.get_session("s1", last_n=1) == []
    assert s.get_entry("s1", a.qa_id) is None
    assert s.add_feedback("s1", a.qa_id, "late", 3) is False
    assert s.delete_feedback("s1", b.qa_id) is False
    assert list(s.iter_entries()) == []
    assert s.list_sessions() == []
    c = s.record("s1", "q3", "a3")
    assert s.get_session("s1") == [c]
    assert s.get_session("s1", last_n=5) == [c]


@pytest.mark.slow
def test_feedback_does_not_extend_ttl(stores: Stores) -> None:
    ttl = 1.0
    s = stores(ttl=ttl)
    _warm_up(s)
    recorded = time.monotonic()
    e = s.record("s1", "q", "a", wait=True)
    time.sleep(0.4)
    assert s.thumbs("s1", e.qa_id, up=True), f"expired {time.monotonic() - recorded:.2f}s in"
    rated = time.monotonic()
    assert s.get_session("s1")[0].feedback_score == 5
    time.sleep(max(0.0, recorded + ttl + 0.15 - time.monotonic()))
    assert time.monotonic() < rated + ttl  # a ttl counted from the feedback would keep it
    assert s.get_session("s1") == []


@pytest.mark.slow
def test_expired_sessions_leave_the_session_list(stores: Stores) -> None:
    s = stores(ttl=1.0)
    _warm_up(s)
    for sid in ("old-1", "old-2", "kept"):
        s.record(sid, "q", "a", user="u")
    time.sleep(0.6)
    s.record("kept", "q again", "a", user="u")  # a new turn keeps the session alive
    time.sleep(0.6)
    assert s.list_sessions(user="u") == ["kept"]
    s.record("new", "q", "a", user="u")
    s.record("old-1", "q", "a", user="u")  # an expired session that starts again is new
    assert s.list_sessions(user="u") == ["kept", "new", "old-1"]
    time.sleep(1.2)
    assert s.list_sessions(user="u") == []
    assert list(s.iter_entries()) == []


def test_max_entries_evicts_the_oldest(stores: Stores) -> None:
    s = stores(max_entries=3)
    ids = [s.record("s1", f"q{i}", "a").qa_id for i in range(5)]
    other = s.record("s2", "q", "a")
    assert [e.qa_id for e in s.get_session("s1")] == ids[2:]
    assert [e.qa_id for e in s.get_session("s1", last_n=2)] == ids[3:]
    assert s.get_session("s2") == [other]
    assert s.add_feedback("s1", ids[0], "gone", 3) is False
    assert s.thumbs("s1", ids[1], up=True) is False
    assert s.delete_feedback("s1", ids[0]) is False
    assert s.get_entry("s1", ids[0]) is None
    assert s.add_feedback("s1", ids[2], "kept", 4) is True
    assert sorted(e.qa_id for e in s.iter_entries()) == sorted([*ids[2:], other.qa_id])
    assert s.delete_session("s1") == 3


def test_max_entries_across_store_objects_and_replacements(stores: Stores) -> None:
    s = stores(max_entries=2, write_behind=False)
    s.record("s1", "q0", "a", qa_id="x0")
    s.record("s1", "q1", "a", qa_id="x1")
    s.record("s1", "q1b", "a", qa_id="x1")  # replacing does not evict
    assert [e.qa_id for e in s.get_session("s1")] == ["x0", "x1"]
    s.record("s1", "q2", "a", qa_id="x2")
    assert [e.qa_id for e in s.get_session("s1")] == ["x1", "x2"]
    again = stores(max_entries=2)
    again.record("s1", "q3", "a", qa_id="x3")
    assert [e.qa_id for e in again.get_session("s1")] == ["x2", "x3"]


# -- namespaces, list_sessions, delete_session ------------------------------------------


def test_namespaces_share_a_location_without_mixing(stores: Stores) -> None:
    a = stores(namespace=stores.ns("a"))
    b = stores(namespace=stores.ns("b"))
    plain = stores()
    ea = a.record("s1", "qa", "aa", qa_id="same")
    eb = b.record("s1", "qb", "ab", qa_id="same")
    assert a.get_session("s1") == [ea]
    assert b.get_session("s1") == [eb]
    assert plain.get_session("s1") == []
    assert b.thumbs("s1", "same", up=True)
    assert a.get_session("s1")[0].feedback_score is None
    assert plain.add_feedback("s1", "same", "x", 1) is False
    assert a.list_sessions() == ["s1"] and plain.list_sessions() == []
    assert b.delete_session("s1") == 1
    assert a.get_session("s1") == [ea]
    assert [e.qa_id for e in a.iter_entries()] == ["same"]
    assert list(plain.iter_entries()) == []


def test_list_sessions(backend_store: SessionStore) -> None:
    s = backend_store
    assert s.list_sessions() == []
    for sid in ("first", "second", "third"):
        s.record(sid, "q", "a")
        time.sleep(0.002)
    s.record("first", "q again", "a")  # a new turn does not move an old session
    s.record("mine", "q", "a", user="alice")
    assert s.list_sessions() == ["first", "second", "third"]
    assert s.list_sessions(user="alice") == ["mine"]
    assert s.list_sessions(user="bob") == []
    assert s.delete_session("second") == 1
    assert s.list_sessions() == ["first", "third"]
    s.record("second", "q", "a")
    assert s.list_sessions() == ["first", "third", "second"]


def test_delete_session(backend_store: SessionStore) -> None:
    s = backend_store
    ids = [s.record("s1", f"q{i}", "a").qa_id for i in range(4)]
    keep = s.record("s2", "q", "a")
    assert s.thumbs("s1", ids[0], up=True)
    assert s.delete_session("s1") == 4
    assert s.get_session("s1") == []
    assert s.get_entry("s1", ids[0]) is None
    assert s.add_feedback("s1", ids[0], "x", 3) is False
    assert s.get_session("s2") == [keep]
    assert s.delete_session("s1") == 0
    assert s.delete_session("never") == 0
    again = s.record("s1", "q", "a")  # the id can be used again
    assert s.get_session("s1") == [again]


def test_delete_session_leaves_no_copy_of_the_text(stores: Stores) -> None:
    s = stores()
    keep = s.record("other", "kept question", "kept answer")
    e = s.record("s1", "my secret question", "my secret answer")
    assert s.thumbs("s1", e.qa_id, up=True)
    assert s.add_feedback("s1", e.qa_id, "my secret comment")
    assert PositiveMemoryRetriever(store=s).invoke("secret")  # indexed
    assert s.delete_session("s1") == 1
    at_rest = stores.stored_text(s)
    assert "kept answer" in at_rest
    assert "secret" not in at_rest
    assert s.get_session("other") == [keep]


def test_expired_turns_leave_no_copy_of_the_text_in_redis(stores: Stores) -> None:
    if not stores.is_redis:
        pytest.skip(
            "diskcache and PostgreSQL remove expired rows on later writes: docs/backends.md"
        )
    s = stores(ttl=0.6)
    e = s.record("s1", "my secret question", "my secret answer")
    assert s.thumbs("s1", e.qa_id, up=True)
    time.sleep(0.8)
    assert "secret" not in stores.stored_text(s)


def test_queued_turns_are_included_by_delete_and_list(stores: Stores) -> None:
    s = stores(flush_interval=10)
    s.record("s1", "q", "a")
    s.record("s1", "q", "a")
    assert s.pending > 0
    assert s.list_sessions() == ["s1"]
    assert s.delete_session("s1") == 2
    s.close()  # closing writes nothing of the deleted queue back
    assert stores().get_session("s1") == []


def test_get_entry_and_iter_entries(backend_store: SessionStore) -> None:
    s = backend_store
    a = s.record("s1", "q", "a", user="u1")
    b = s.record("s2", "q", "a")
    assert s.get_entry("s1", a.qa_id, user="u1") == a
    assert s.get_entry("s1", a.qa_id) is None
    assert sorted(e.qa_id for e in s.iter_entries()) == sorted([a.qa_id, b.qa_id])


# -- persistence across processes ------------------------------------------------------


def test_persistence_across_processes(stores: Stores, run_child: Any) -> None:
    """Turns and feedback written here are read by a new interpreter, and the other way."""
    s = stores()
    a = s.record("s1", "q0", "a0 🎉", user="bob")
    s.record("s1", "q1", "a1", user="bob")
    assert s.add_feedback("s1", a.qa_id, "nice", 4, user="bob")
    s.record("s1", "queued here", "a2", user="bob")  # read-your-writes is per process ...
    s.flush()  # ... so flush before another process reads
    proc = run_child(
        """
        import json
        s = open_store()
        print(json.dumps([e.model_dump(mode="json") for e in s.get_session("s1", user="bob")]))
        print(json.dumps(s.get_session("s1")))
        print(json.dumps(s.list_sessions(user="bob")))
        ids = [s.record("s2", f"q{i}", f"a{i}", [f"c{i}"], user="alice").qa_id for i in range(3)]
        assert s.thumbs("s2", ids[1], up=True, user="alice")
        assert s.add_feedback("s2", ids[2], "comment only", user="alice")
        s.record("s2", "queued at exit", "a", user="alice")  # left to the exit flush
        """
    )
    lines = proc.stdout.strip().splitlines()
    rows = json.loads(lines[0])
    assert [r["question"] for r in rows] == ["q0", "q1", "queued here"]
    assert rows[0]["answer"] == "a0 🎉"
    assert (rows[0]["feedback_text"], rows[0]["feedback_score"]) == ("nice", 4)
    assert json.loads(lines[1]) == []
    assert json.loads(lines[2]) == ["s1"]

    got = stores().get_session("s2", user="alice")
    assert [e.question for e in got] == ["q0", "q1", "q2", "queued at exit"]
    assert [e.context for e in got] == [["c0"], ["c1"], ["c2"], []]
    assert [e.feedback_score for e in got] == [None, 5, None, None]
    assert [e.feedback_text for e in got] == [None, None, "comment only", None]
    assert all(e.time.tzinfo is not None for e in got)
