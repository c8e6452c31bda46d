"""MemoryIndex and match_query: the FTS5 engine behind positive memory."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback_plugin import PositiveMemoryRetriever, SessionQAEntry, SessionStore
from feedback_plugin.backends.fts import MemoryIndex
from feedback_plugin.backends.fts_schema import MAX_TERMS, match_query

NASTY_QUERIES = [
    "",
    "   ",
    "?!",
    "...;;;---",
    "x" * 10_000,
    "word " * 2_000,
    "pass\x00word",
    "\x00",
    "\x00\x00\x00",
    'AND OR NOT "* ^ NEAR(',
    "NEAR(a b, 2)",
    "a AND",
    "OR",
    "NOT",
    '"',
    '""',
    "'",
    "*",
    "^",
    "question:reset",
    "answer : x",
    "{question answer}: reset",
    "-reset",
    "+reset",
    "reset*",
    "(((",
    ")",
    "日本語 🎉🚀",
    "naïve café",
    "a_b_c",
    "_",
    "__",
    "rowid",
    "turns_fts",
    "'; DROP TABLE turns; --",
]


def entry(
    qa_id: str,
    question: str,
    answer: str,
    *,
    score: int | None = 5,
    user: str | None = None,
    session_id: str = "s1",
    correction: str | None = None,
    time: datetime | None = None,
) -> SessionQAEntry:
    kwargs = {} if time is None else {"time": time}
    return SessionQAEntry(
        qa_id=qa_id,
        session_id=session_id,
        question=question,
        answer=answer,
        feedback_score=score,
        user_id=user,
        correction=correction,
        **kwargs,
    )


def ids(hits: list) -> list[str]:
    return [h.qa_id for h in hits]


def search(index: MemoryIndex, query: str, **kw: object) -> list:
    options: dict[str, object] = {"user": None, "limit": 10, "min_score": 4}
    options.update(kw)
    return index.search(query, **options)  # type: ignore[arg-type]


@pytest.fixture
def index() -> MemoryIndex:
    idx = MemoryIndex(None)
    yield idx
    idx.close()


# -- match_query -----------------------------------------------------------------


def test_match_query_quotes_each_word_lowercased_and_ors_them() -> None:
    assert match_query("Resetting MY Password? Now!") == '"resetting" OR "password" OR "now"'


def test_match_query_leaves_out_stop_words_unless_nothing_else_is_left() -> None:
    assert match_query("How do I reset my password?") == '"reset" OR "password"'
    assert match_query("How do I?") == '"how" OR "do" OR "i"'


def test_match_query_deduplicates_terms() -> None:
    assert match_query("Reset reset RESET password") == '"reset" OR "password"'


def test_match_query_never_passes_fts_syntax_through() -> None:
    q = match_query('AND OR NOT "* ^ NEAR(')
    assert q == '"not" OR "near"'
    assert match_query('AND OR "*') == '"and" OR "or"'
    # No operator survives outside quotes: every token between the ORs is a quoted word.
    for part in q.split(" OR "):
        assert part.startswith('"') and part.endswith('"')
        assert '"' not in part[1:-1]


@pytest.mark.parametrize("text", ["", "   ", "?!", "...;;;---", "\x00", "\x00 \x00", '"*^(', "🎉"])
def test_match_query_without_words_is_none(text: str) -> None:
    assert match_query(text) is None


def test_match_query_caps_a_10000_char_query() -> None:
    long_words = " ".join(f"w{i}" for i in range(5_000))
    q = match_query(long_words)
    assert q is not None
    assert q.count(" OR ") == MAX_TERMS - 1
    one_word = match_query("x" * 10_000)
    assert one_word == '"' + "x" * 10_000 + '"'


def test_match_query_splits_on_nul_characters() -> None:
    assert match_query("pass\x00word") == '"pass" OR "word"'


@pytest.mark.parametrize("query", NASTY_QUERIES)
def test_search_never_raises_on_odd_queries(index: MemoryIndex, query: str) -> None:
    index.apply(entry("q1", "How do I reset my password?", "Settings > Security."))
    hits = search(index, query)
    assert all(h.qa_id == "q1" for h in hits)


def test_fts_keywords_are_searched_as_plain_words(index: MemoryIndex) -> None:
    index.apply(entry("q1", "Why is NOT NULL required?", "Because the column must have a value."))
    index.apply(entry("q2", "Is it near the station?", "Yes, five minutes away."))
    index.apply(entry("q3", "Unrelated", "Nothing here."))
    assert ids(search(index, "NOT")) == ["q1"]
    assert ids(search(index, "NEAR(")) == ["q2"]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.text(max_size=200))
def test_any_text_is_a_valid_query(text: str) -> None:
    idx = MemoryIndex(None)
    try:
        idx.apply(entry("q1", "How do I reset my password?", "Settings > Security."))
        hits = search(idx, text)
        assert ids(hits) in ([], ["q1"])
    finally:
        idx.close()


# -- apply / forget / search -----------------------------------------------------


def test_apply_inserts_updates_and_removes(index: MemoryIndex) -> None:
    e = entry("q1", "How do I reset my password?", "Settings > Security.")
    index.apply(e)
    assert ids(search(index, "password")) == ["q1"]
    index.apply(e.model_copy(update={"feedback_score": 4}))
    assert index.count() == 1  # updated in place, not duplicated
    assert ids(search(index, "password")) == ["q1"]
    index.apply(e.model_copy(update={"feedback_score": 1}))
    assert search(index, "password") == []  # below min_score
    index.apply(e.model_copy(update={"feedback_score": None}))
    assert index.count() == 0  # neither score nor correction: not indexed at all


def test_unrated_turn_is_not_indexed(index: MemoryIndex) -> None:
    index.apply(entry("q1", "How do I reset my password?", "Settings.", score=None))
    assert index.count() == 0
    assert search(index, "password") == []
    assert search(index, "") == []


def test_forget_drops_one_turn(index: MemoryIndex) -> None:
    index.apply(entry("q1", "reset password", "a"))
    index.apply(entry("q2", "reset password again", "b"))
    index.forget(None, "s1", "q1")
    assert ids(search(index, "password")) == ["q2"]
    index.forget(None, "s1", "missing")  # no error for an unknown turn
    assert index.count() == 1


def test_forget_is_scoped_to_user(index: MemoryIndex) -> None:
    index.apply(entry("q1", "reset password", "a", user="alice"))
    index.forget("bob", "s1", "q1")
    index.forget(None, "s1", "q1")
    assert ids(search(index, "password", user="alice")) == ["q1"]


def test_search_is_scoped_by_user(index: MemoryIndex) -> None:
    index.apply(entry("a1", "reset password", "alice's", user="alice"))
    index.apply(entry("b1", "reset password", "bob's", user="bob"))
    index.apply(entry("n1", "reset password", "nobody's", user=None))
    assert ids(search(index, "password", user="alice")) == ["a1"]
    assert ids(search(index, "password", user="bob")) == ["b1"]
    assert ids(search(index, "password", user=None)) == ["n1"]
    assert ids(search(index, "", user="alice")) == ["a1"]
    assert search(index, "password", user="carol") == []


def test_same_ids_for_different_users_are_separate_rows(index: MemoryIndex) -> None:
    index.apply(entry("q1", "reset password", "alice's", user="alice"))
    index.apply(entry("q1", "reset password", "bob's", user="bob"))
    assert index.count() == 2
    index.apply(entry("q1", "reset password", "bob's", user="bob", score=None))
    assert ids(search(index, "password", user="alice")) == ["q1"]
    assert search(index, "password", user="bob") == []


def test_search_is_scoped_by_namespace(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite3"
    a, b = MemoryIndex(path, namespace="a"), MemoryIndex(path, namespace="b")
    try:
        a.apply(entry("q1", "reset password", "from a"))
        b.apply(entry("q2", "reset password", "from b"))
        assert ids(search(a, "password")) == ["q1"]
        assert ids(search(b, "password")) == ["q2"]
        b.forget(None, "s1", "q1")  # b cannot drop a's row
        assert ids(search(a, "password")) == ["q1"]
    finally:
        a.close()
        b.close()


def test_search_filters_session_score_and_time(index: MemoryIndex) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    index.apply(entry("old", "reset password", "x", time=t0, score=4))
    index.apply(entry("mid", "reset password", "x", time=t0 + timedelta(days=1), session_id="s2"))
    index.apply(entry("new", "reset password", "x", time=t0 + timedelta(days=2), score=3))
    assert sorted(ids(search(index, "password"))) == ["mid", "old"]
    assert sorted(ids(search(index, "password", min_score=3))) == ["mid", "new", "old"]
    assert ids(search(index, "password", min_score=5)) == ["mid"]
    assert ids(search(index, "password", session_id="s2")) == ["mid"]
    assert ids(search(index, "password", since=t0 + timedelta(hours=1))) == ["mid"]
    assert ids(search(index, "password", until=t0 + timedelta(hours=1))) == ["old"]
    assert ids(search(index, "", until=t0 + timedelta(hours=1))) == ["old"]


def test_search_ranks_the_best_match_first(index: MemoryIndex) -> None:
    index.apply(entry("both", "How do I reset my password?", "Use settings."))
    index.apply(entry("one", "Where is the password policy?", "In the wiki."))
    for i in range(5):
        index.apply(entry(f"filler{i}", f"Unrelated question {i}", "Unrelated answer."))
    hits = search(index, "reset password")
    assert ids(hits)[0] == "both"
    assert "one" in ids(hits)
    assert hits[0].relevance > hits[1].relevance


def test_question_weighs_more_than_answer(index: MemoryIndex) -> None:
    index.apply(entry("in_answer", "How do I log in?", "Open the invoice page first."))
    index.apply(entry("in_question", "Where is the invoice page?", "Under billing."))
    for i in range(5):
        index.apply(entry(f"filler{i}", f"Unrelated question {i}", "Unrelated answer."))
    assert ids(search(index, "invoice"))[:2] == ["in_question", "in_answer"]


def test_correction_replaces_the_answer_text_and_keeps_the_turn(index: MemoryIndex) -> None:
    index.apply(
        entry(
            "q1", "How do I reset?", "Reinstall everything.", score=1, correction="Hold the button."
        )
    )
    assert ids(search(index, "button")) == ["q1"]  # corrected answer is searchable
    assert search(index, "reinstall") == []  # the wrong answer is not


def test_limit_and_empty_query_returns_most_recent(index: MemoryIndex) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for i in range(5):
        index.apply(entry(f"q{i}", f"question {i}", "answer", time=t0 + timedelta(minutes=i)))
    assert ids(search(index, "", limit=3)) == ["q4", "q3", "q2"]
    assert len(search(index, "question", limit=2)) == 2


def test_index_is_shared_across_connections_on_one_file(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite3"
    writer, reader = MemoryIndex(path), MemoryIndex(path)
    try:
        assert search(reader, "password") == []
        writer.apply(entry("q1", "reset password", "x"))
        assert ids(search(reader, "password")) == ["q1"]
        writer.apply(entry("q1", "reset password", "x", score=None))
        assert search(reader, "password") == []
    finally:
        writer.close()
        reader.close()


# -- upgrades: a store whose index is missing is indexed from a scan ---------------


def _populate(store: SessionStore, user: str | None = None) -> dict[str, str]:
    liked = store.record(
        "s1", "How do I reset my password?", "Settings > Security.", user=user, wait=True
    )
    disliked = store.record(
        "s2", "How do I reset my router?", "Throw it away.", user=user, wait=True
    )
    unrated = store.record("s3", "How do I reset my phone?", "Hold power.", user=user, wait=True)
    fixed = store.record("s4", "How do I reset the modem?", "Unplug it.", user=user, wait=True)
    assert store.thumbs("s1", liked.qa_id, up=True, user=user)
    assert store.thumbs("s2", disliked.qa_id, up=False, user=user)
    assert store.add_feedback("s4", fixed.qa_id, correction="Press reset for 10 s.", user=user)
    return {
        "liked": liked.qa_id,
        "disliked": disliked.qa_id,
        "unrated": unrated.qa_id,
        "fixed": fixed.qa_id,
    }


def _remove_index(directory: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        p = directory / f"memory.sqlite3{suffix}"
        if p.exists():
            os.remove(p)


def test_deleted_index_is_rebuilt_from_a_scan_on_first_query(store_dir: Path) -> None:
    with SessionStore(store_dir) as s:
        turns = _populate(s, user="alice")
    _remove_index(store_dir)
    assert not (store_dir / "memory.sqlite3").exists()

    with SessionStore(store_dir) as fresh:
        docs = PositiveMemoryRetriever(store=fresh, user="alice", k=10).invoke("reset")
        got = {d.metadata["qa_id"] for d in docs}
        assert got == {turns["liked"], turns["fixed"]}
        assert fresh.memory.count() == 3  # liked, disliked (rated) and corrected
        assert PositiveMemoryRetriever(store=fresh, k=10).invoke("reset") == []  # user=None


def test_store_written_without_this_index_is_indexed_on_first_query(
    store_dir: Path, tmp_path: Path
) -> None:
    # Feedback written through a store whose memory index lives elsewhere: the
    # directory's own index file never learns about it.
    with SessionStore(store_dir) as old:
        old._memory = MemoryIndex(tmp_path / "elsewhere.sqlite3")
        turns = _populate(old)
    assert not (store_dir / "memory.sqlite3").exists()

    with SessionStore(store_dir) as fresh:
        docs = PositiveMemoryRetriever(store=fresh, k=10).invoke("reset password")
        assert docs[0].metadata["qa_id"] == turns["liked"]
        assert {d.metadata["qa_id"] for d in docs} == {turns["liked"], turns["fixed"]}


def test_rebuild_happens_once_then_changes_are_incremental(store_dir: Path) -> None:
    with SessionStore(store_dir) as s:
        turns = _populate(s)
    _remove_index(store_dir)
    with SessionStore(store_dir) as s:
        r = PositiveMemoryRetriever(store=s, k=10)
        assert len(r.invoke("reset")) == 2
        assert s.delete_feedback("s1", turns["liked"])
        assert {d.metadata["qa_id"] for d in r.invoke("reset")} == {turns["fixed"]}
        assert s.thumbs("s3", turns["unrated"], up=True)
        assert turns["unrated"] in {d.metadata["qa_id"] for d in r.invoke("reset phone")}


def test_upgrade_indexes_every_namespace_sharing_a_directory(store_dir: Path) -> None:
    with SessionStore(store_dir, namespace="a") as a, SessionStore(store_dir, namespace="b") as b:
        a_turns, b_turns = _populate(a), _populate(b)
    _remove_index(store_dir)

    with SessionStore(store_dir, namespace="a") as a, SessionStore(store_dir, namespace="b") as b:
        got_a = {
            d.metadata["qa_id"] for d in PositiveMemoryRetriever(store=a, k=10).invoke("reset")
        }
        got_b = {
            d.metadata["qa_id"] for d in PositiveMemoryRetriever(store=b, k=10).invoke("reset")
        }
    assert got_a == {a_turns["liked"], a_turns["fixed"]}
    assert got_b == {b_turns["liked"], b_turns["fixed"]}


def test_index_file_sits_beside_the_store(store: SessionStore, store_dir: Path) -> None:
    t = store.record("s1", "q", "a", wait=True)
    assert store.thumbs("s1", t.qa_id, up=True)
    store.ready_memory()  # the index catches up with the store before a query
    path = store_dir / "memory.sqlite3"
    assert path.exists()
    con = sqlite3.connect(path)
    try:
        # ids are stored JSON-escaped (so lone surrogates fit in SQLite)
        assert con.execute("SELECT qa_id, score FROM turns").fetchall() == [
            (json.dumps(t.qa_id), 5)
        ]
    finally:
        con.close()


def test_an_index_of_an_older_layout_is_rebuilt_from_the_store(
    store: SessionStore, store_dir: Path
) -> None:
    from feedback_plugin import PositiveMemoryRetriever

    t = store.record("s1", "How do I reset my password?", "Use the link.", wait=True)
    assert store.thumbs("s1", t.qa_id, up=True)
    store.ready_memory()
    store.close()
    con = sqlite3.connect(store_dir / "memory.sqlite3")
    con.execute("PRAGMA user_version = 1")  # pretend an older release wrote it
    con.execute("DELETE FROM turns")
    con.commit()
    con.close()
    reopened = SessionStore(store_dir)
    try:
        docs = PositiveMemoryRetriever(store=reopened).invoke("password")
        assert [d.metadata["qa_id"] for d in docs] == [t.qa_id]
    finally:
        reopened.close()
