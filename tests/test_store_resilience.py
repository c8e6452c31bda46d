"""The default store under bad data and bad luck: one bad turn never takes it down.

Each test here reproduces a way the store used to fail for every user
(hardening issue, items 1-4, 11, 13, 25) and pins the behaviour a user
relies on instead.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from _redis import REDIS_URL, require_redis

from feedback_plugin import SessionStore, StoreError
from feedback_plugin.backends import DiskBackend
from feedback_plugin.backends.base import Item
from feedback_plugin.session import add_feedback, delete_feedback, get_session

# -- 1. a user with many sessions, then a long turn -------------------------------------------


def test_a_new_session_after_many_sessions_and_a_long_turn(store: SessionStore) -> None:
    # ~900 sessions make a per-user list longer than diskcache's 32 KiB file threshold; a
    # 40 KB turn then took the slow path, and the next new session could not be written.
    for i in range(900):
        store.record(f"session-{i:04d}-{'x' * 30}", "q", "a")
    store.flush()
    long_context = "lorem ipsum " * 4000  # a long RAG context
    store.record("rag-session", "q", "a", [long_context], wait=True)
    after = store.record("after", "q", "a", wait=True)
    assert store.get_session("after") == [after]
    sessions = store.list_sessions()
    assert len(sessions) == 902
    assert sessions[-2:] == ["rag-session", "after"]  # oldest first


def test_list_sessions_keeps_the_order_sessions_started_in(store: SessionStore) -> None:
    for name in ["b", "a", "c"]:
        store.record(name, "q", "a")
    store.record("a", "q2", "a2")  # a later turn does not move its session
    assert store.list_sessions() == ["b", "a", "c"]
    store.delete_session("a")
    assert store.list_sessions() == ["b", "c"]
    store.record("a", "again", "a")
    assert store.list_sessions() == ["b", "c", "a"]


# -- 4. starting a session costs the same at any session count --------------------------------


def test_starting_a_session_rewrites_no_value_that_grows_with_the_session_count(
    store: SessionStore,
) -> None:
    # Every write must be O(1): no per-user value may grow as sessions are started (a
    # list of every session id was rewritten whole each time one started).
    for i in range(3000):
        store.record(f"visitor-{i}", "q", "a")
    store.flush()
    cache = store.backend.cache  # type: ignore[attr-defined]
    longest = max(
        len(str(cache.get(key)))
        for key in cache.iterkeys()
        if json.loads(key)[1] not in ("e",)  # entries are the turns themselves
    )
    assert longest < 200


def test_sessions_started_before_this_release_are_still_listed(store_dir: Path) -> None:
    backend = DiskBackend(store_dir)
    cache = backend.cache
    # the old layout: "first next" windows and a JSON list of the user's sessions
    for name in ["old-1", "old-2"]:
        cache.set(json.dumps([None, "m", None, name], separators=(",", ":")), "0 0")
    cache.set(json.dumps([None, "u", None], separators=(",", ":")), '["old-2","old-1"]')
    backend.close()
    with SessionStore(store_dir) as store:
        store.record("new", "q", "a")
        assert store.list_sessions() == ["old-2", "old-1", "new"]


# -- 2. one unwritable queued turn ------------------------------------------------------------


class PoisonBackend(DiskBackend):
    """The real diskcache backend, refusing turns whose answer is "poison" as a backend
    refuses an item it can never store (not a passing fault)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.outage = False

    def append(self, items: Sequence[Item]) -> None:
        if self.outage:
            raise OSError("disk unavailable")
        if any('"answer":"poison"' in payload for _, _, payload in items):
            raise ValueError("this item cannot be stored")
        super().append(items)


@pytest.fixture
def poisoned(store_dir: Path) -> Any:
    backend = PoisonBackend(store_dir)
    store = SessionStore(backend=backend)
    yield store, backend
    store.close()


def test_an_unwritable_queued_turn_is_dropped_and_blocks_no_one(
    poisoned: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store, _ = poisoned
    before = store.record("s-bob", "q0", "fine", user="bob")
    with caplog.at_level(logging.ERROR, logger="feedback_plugin"):
        store.record("s-eve", "q", "poison", user="eve")
        after = store.record("s-bob", "q1", "also fine", user="bob")
        assert store.get_session("s-bob", user="bob") == [before, after]
        assert store.thumbs("s-bob", after.qa_id, up=True, user="bob")
        assert store.get_session("s-eve", user="eve") == []
    assert store.pending == 0
    assert any("cannot be written" in r.getMessage() for r in caplog.records)


def test_a_transient_failure_keeps_queued_turns_for_the_retry(poisoned: Any) -> None:
    store, backend = poisoned
    stored = store.record("s-bob", "q0", "fine", user="bob", wait=True)
    backend.outage = True
    queued = store.record("s-eve", "q", "kept", user="eve")
    # bob's session has nothing queued: it reads what is stored
    assert store.get_session("s-bob", user="bob") == [stored]
    # eve's turn is queued, not lost: her read must not be silently incomplete
    with pytest.raises(StoreError):
        store.get_session("s-eve", user="eve")
    assert store.pending == 1
    backend.outage = False
    assert store.get_session("s-eve", user="eve") == [queued]


# -- 3. a damaged stored entry ----------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    ["not json at all", "[1, 2, 3]", '{"qa_id": "x"}', '{"qa_id": 5, "question": []}'],
    ids=["not-json", "not-a-dict", "missing-fields", "wrong-types"],
)
def test_a_damaged_entry_is_skipped_and_logged(
    store: SessionStore, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = store.record("s1", "q1", "a1", wait=True)
    broken = store.record("s1", "q2", "a2", wait=True)
    last = store.record("s1", "q3", "a3", wait=True)
    backend = store.backend
    key = json.dumps([None, "e", None, "s1", 1], separators=(",", ":"))
    assert json.loads(backend.cache.get(key))["qa_id"] == broken.qa_id  # type: ignore[attr-defined]
    backend.cache.set(key, damage)  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR, logger="feedback_plugin"):
        assert store.get_session("s1") == [first, last]
        assert store.get_entry("s1", broken.qa_id) is None
        assert {e.qa_id for e in store.iter_entries()} == {first.qa_id, last.qa_id}
        assert store.add_feedback("s1", broken.qa_id, feedback_score=5) is False
        assert store.thumbs("s1", last.qa_id, up=True)
    assert any("not a turn" in r.getMessage() for r in caplog.records)
    assert store.delete_session("s1") == 3  # a damaged entry can still be deleted
    assert store.get_session("s1") == []


# -- 11. an enormous last_n -------------------------------------------------------------------


@pytest.fixture(params=["disk", "redis"])
def any_store(request: pytest.FixtureRequest, store_dir: Path) -> Any:
    if request.param == "disk":
        store = SessionStore(store_dir)
    else:
        require_redis()
        store = SessionStore(REDIS_URL, namespace=f"test-{uuid.uuid4().hex}")
    yield store
    if request.param == "redis":
        store.backend.drop()  # type: ignore[attr-defined]
    store.close()


@pytest.mark.parametrize("last_n", [10**17, 2**63, 10**30])
def test_a_last_n_larger_than_any_session_reads_all_turns(
    any_store: SessionStore, last_n: int
) -> None:
    turns = [any_store.record("s1", f"q{i}", "a") for i in range(3)]
    assert any_store.get_session("s1", last_n=last_n) == turns


# -- 13. a full disk says so ------------------------------------------------------------------


def test_a_full_disk_is_reported_as_a_full_disk(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    with SessionStore(directory) as store:
        store.record("s1", "q", "a", wait=True)
    backend = DiskBackend(directory, settings={"sqlite_max_page_count": 1})
    store = SessionStore(backend=backend, write_behind=False)
    try:
        with pytest.raises(StoreError) as raised:
            for i in range(50):
                store.record(f"s{i}", "q", "x" * 20_000)
        assert "full" in str(raised.value)
        assert "cannot rollback" not in str(raised.value)
    finally:
        store.close()


# -- 25. UUID objects as ids ------------------------------------------------------------------


def test_uuid_objects_stand_for_their_string_form(store: SessionStore) -> None:
    session, turn = uuid.uuid4(), uuid.uuid4()
    entry = store.record(session, "q", "a", qa_id=turn)
    assert (entry.session_id, entry.qa_id) == (str(session), str(turn))
    assert store.add_feedback(session, turn, feedback_score=4)
    [stored] = store.get_session(session)
    assert stored.feedback_score == 4
    assert store.get_entry(str(session), str(turn)) == stored
    assert store.delete_feedback(session, turn)
    assert store.list_sessions() == [str(session)]
    assert store.delete_session(session) == 1


def test_the_session_module_takes_uuid_objects(_default_dir: Path) -> None:
    session, turn = uuid.uuid4(), uuid.uuid4()
    with SessionStore(_default_dir) as store:  # the module's default store
        store.record(str(session), "q", "a", qa_id=str(turn))
    assert add_feedback(session, turn, feedback_score=5)
    [entry] = get_session(session)
    assert entry.feedback_score == 5
    assert delete_feedback(session, turn)


def test_reports_skip_a_damaged_entry(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    from feedback_plugin import analytics

    good = store.record("s1", "q1", "a1", wait=True)
    store.record("s1", "q2", "a2", wait=True)
    assert store.thumbs("s1", good.qa_id, up=True)
    key = json.dumps([None, "e", None, "s1", 1], separators=(",", ":"))
    store.backend.cache.set(key, '{"qa_id": "x", "feedback_score": "5"}')  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR, logger="feedback_plugin"):
        [overall] = analytics.stats(store)
        exported = list(analytics.raw_records(store))
        listed = list(analytics.entries(store))
    assert (overall.turns, overall.positive) == (1, 1)
    assert len(exported) == 1
    assert [e.qa_id for e in listed] == [good.qa_id]
    assert any("not a turn" in r.getMessage() for r in caplog.records)


# -- 9. text UTF-8 cannot carry, at every entry point -----------------------------------------


def test_lone_surrogates_round_trip_through_record_tools_export_and_import(
    store: SessionStore, tmp_path: Path
) -> None:
    import io

    from feedback_plugin import FeedbackToolkit, analytics

    turn = store.record("s\ud800", "q \udfff", "a \ud800", ["doc \ud800"], wait=True)
    tools = {t.name: t for t in FeedbackToolkit(store=store, session_id="s\ud800").get_tools()}
    out = tools["add_feedback"].invoke(
        {"qa_id": turn.qa_id, "feedback_score": 5, "feedback_text": "ok \ud800"}
    )
    assert out.startswith("Feedback saved")
    found = tools["search_positive_memory"].invoke({"query": "q \udfff"})
    assert "a \ud800" in found
    exported = io.StringIO()
    analytics.export_jsonl(store, exported)
    other = SessionStore(tmp_path / "other")
    try:
        assert analytics.import_jsonl(other, io.StringIO(exported.getvalue())) == 1
        [back] = other.get_session("s\ud800")
        assert (back.question, back.answer, back.context, back.feedback_text) == (
            "q \udfff",
            "a \ud800",
            ["doc \ud800"],
            "ok \ud800",
        )
    finally:
        other.close()
