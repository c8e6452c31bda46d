"""A memory query looks for its rarest words (fts_terms): stemmed exactly as the index
stems, chosen by document frequency, never finding fewer hits than every word would."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback_plugin import SessionQAEntry
from feedback_plugin.backends import fts_terms
from feedback_plugin.backends.fts import MemoryIndex
from feedback_plugin.backends.fts_schema import query_words
from feedback_plugin.backends.fts_terms import Plan, TermPicker


def entry(
    i: int, question: str, answer: str = "See the help page.", **kw: object
) -> SessionQAEntry:
    return SessionQAEntry(
        qa_id=f"q{i}",
        session_id=str(kw.pop("session_id", "s1")),
        question=question,
        answer=answer,
        feedback_score=5,
        user_id=kw.pop("user", None),  # type: ignore[arg-type]
    )


def ids(hits: list) -> list[str]:
    return [h.qa_id for h in hits]


def search(index: MemoryIndex, query: str, *, every_word: bool = False, **kw: object) -> list:
    options: dict[str, object] = {"user": None, "limit": 10, "min_score": 4, **kw}
    index._every_word = every_word
    try:
        return index.search(query, **options)  # type: ignore[arg-type]
    finally:
        index._every_word = False


@pytest.fixture
def index() -> Iterator[MemoryIndex]:
    """An index that picks terms however small it is (the default waits for 5,000 rows)."""
    idx = MemoryIndex(None)
    idx._terms = TermPicker(min_rows=0)
    yield idx
    idx.close()


# -- words as the index tokenizes them ---------------------------------------------------


@pytest.mark.parametrize(
    ("word", "terms"),
    [
        ("resetting", ("reset",)),
        ("reset", ("reset",)),
        ("accounts", ("account",)),
        ("naïve", ("naiv",)),
        ("café", ("cafe",)),
        ("a b", ("a", "b")),  # a_b: one word, a phrase of two terms
        ("日本語", ("日本語",)),
        ("\u0301", ()),
    ],
)
def test_a_word_becomes_the_terms_the_index_holds(word: str, terms: tuple[str, ...]) -> None:
    picker = TermPicker()
    try:
        assert picker.terms(word) == terms
    finally:
        picker.close()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.text(min_size=1, max_size=60))
def test_a_words_frequency_agrees_with_what_matching_it_finds(text: str) -> None:
    """The frequency of a query word is read under the very terms FTS5 searches for
    when the word is matched (both go through the index's tokenizer)."""
    idx = MemoryIndex(None)
    picker = TermPicker()
    try:
        idx.apply(entry(1, text, "-"))
        con = idx._connect()
        for word in query_words(text):
            found = con.execute(
                "SELECT count(*) FROM turns_fts WHERE turns_fts MATCH ?",
                (f'{{question answer}}:"{word}"',),
            ).fetchone()[0]
            frequency = picker.frequency(con, word)
            if len(picker.terms(word)) == 1:
                assert frequency == found, word
            else:  # a phrase: no more frequent than its rarest term
                assert frequency >= found, word
    finally:
        picker.close()
        idx.close()


# -- the rule -------------------------------------------------------------------------------


def test_common_words_are_dropped_when_rarer_ones_exist() -> None:
    picker = TermPicker(min_rows=0)
    words = ["account", "change", "xylophone", "set"]
    assert picker.choose(words, [900, 700, 3, 800], rows=1000) == Plan(
        ["xylophone"], ["account", "change", "set"]
    )
    # at most 20% of the rows: kept, rarest first, up to six
    many = [f"w{i}" for i in range(9)]
    plan = picker.choose(many, [10, 20, 30, 40, 50, 60, 70, 80, 90], rows=1000)
    assert plan == Plan(["w0", "w1", "w2", "w3", "w4", "w5"], ["w6", "w7", "w8"])


def test_when_every_word_is_common_the_two_rarest_stay() -> None:
    picker = TermPicker(min_rows=0)
    plan = picker.choose(["how", "change", "account"], [950, 600, 700], rows=1000)
    assert plan == Plan(["change", "account"], ["how"], common=True)


def test_words_no_row_holds_stay_and_do_not_count() -> None:
    picker = TermPicker(min_rows=0)
    words = ["typo", "account", "rare"] + [f"r{i}" for i in range(6)]
    freqs = [0, 900, 5] + [10] * 6
    plan = picker.choose(words, freqs, rows=1000)
    assert "typo" in plan.kept and "rare" in plan.kept and plan.dropped == ["account", "r5"]
    assert len(plan.kept) == 1 + 6 and not plan.common
    assert picker.choose(["typo", "xq"], [0, 0], rows=1000) == Plan(["typo", "xq"], [])


def test_small_indexes_search_every_word(tmp_path: Path) -> None:
    idx = MemoryIndex(None)  # the default picker: 5,000 rows at least
    try:
        idx.apply(entry(1, "change account settings"))
        con = idx._connect()
        assert idx._terms.plan(con, ["change", "account"]) == Plan(["change", "account"], [])
    finally:
        idx.close()


# -- searches ------------------------------------------------------------------------------


def _help_desk(index: MemoryIndex, n: int = 60) -> None:
    for i in range(n):
        index.apply(entry(i, f"How do I change my account setting number {i}?"))
    for i in range(n, n + 12):
        index.apply(entry(i, f"Why does the xylophone plugin crash on account {i}?"))
    for i in range(n + 12, n + 14):
        index.apply(entry(i, "Where is the zither manual?"))


def test_a_rare_word_with_enough_hits_is_searched_alone(index: MemoryIndex) -> None:
    _help_desk(index)
    con = index._connect()
    assert index._terms.plan(con, ["account", "xylophone"]) == Plan(["xylophone"], ["account"])
    hits = search(index, "account xylophone")
    assert len(hits) == 10
    assert all(int(h.qa_id[1:]) >= 60 for h in hits)  # xylophone turns only
    # the exhaustive ranking agrees: the rare word weighs most
    assert set(ids(search(index, "account xylophone", every_word=True))) == set(ids(hits))


def test_too_few_hits_for_the_rare_words_fill_up_with_the_dropped(index: MemoryIndex) -> None:
    _help_desk(index)
    hits = search(index, "account zither")
    assert len(hits) == 10  # the two zither turns, then account turns
    assert ids(hits)[:2] == ids(search(index, "account zither", every_word=True))[:2]
    assert {"q72", "q73"} <= set(ids(hits))
    assert hits[1].relevance > 0 and all(h.relevance == 0.0 for h in hits[2:])  # not ranked


def test_common_words_alone_rank_the_last_rows_indexed(
    index: MemoryIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fts_terms, "WINDOW", 0)  # the window: 20 x limit rows
    for i in range(100):  # the first rows say "account" most: BM25's favourites
        text = "account account account" if i < 50 else "my account"
        index.apply(entry(i, f"{text} change number {i}"))
    con = index._connect()
    assert index._terms.plan(con, ["account", "change"]).common
    hits = search(index, "account change", limit=2)
    assert len(hits) == 2 and all(int(h.qa_id[1:]) >= 60 for h in hits)  # the last 40
    every = search(index, "account change", limit=2, every_word=True)
    assert all(int(h.qa_id[1:]) < 50 for h in every)


def test_a_user_without_the_rare_word_still_finds_the_common_one(index: MemoryIndex) -> None:
    _help_desk(index)
    index.apply(entry(500, "How do I change my account email?", user="alice"))
    assert ids(search(index, "account xylophone", user="alice")) == ["q500"]
    assert search(index, "account xylophone", user="bob") == []


@pytest.mark.parametrize(
    "query",
    [
        "account",
        "change account",
        "how do I change my account setting",
        "xylophone account change",
        "zither account",
        "zither xylophone",
        "unknownword account",
        "setting 17",
        "crash plugin 65",
    ],
)
@pytest.mark.parametrize("limit", [1, 5, 10, 40])
def test_never_fewer_hits_than_searching_every_word(
    index: MemoryIndex, query: str, limit: int
) -> None:
    _help_desk(index)
    picked = search(index, query, limit=limit)
    every = search(index, query, limit=limit, every_word=True)
    assert len(picked) == len(every)


def test_a_word_counted_absent_a_minute_ago_is_still_found(index: MemoryIndex) -> None:
    _help_desk(index)
    assert search(index, "account ocarina") != []  # "ocarina": no row, cached as 0
    index.apply(entry(900, "The ocarina app needs an account"))
    assert ids(search(index, "account ocarina"))[0] == "q900"


def test_an_index_file_without_the_vocabulary_table_gets_one(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite3"
    idx = MemoryIndex(path)
    idx.apply(entry(1, "reset password"))
    idx.close()
    con = sqlite3.connect(path)
    con.execute("DROP TABLE turns_vocab")  # a file of the same layout, older release
    con.commit()
    con.close()
    idx = MemoryIndex(path)
    idx._terms = TermPicker(min_rows=0)
    try:
        assert ids(search(idx, "password reset")) == ["q1"]
    finally:
        idx.close()


# -- many rows matching: the strict first look, and a large owner --------------------------

WORDS = ["alpha", "bravo", "charlie", "delta", "echo"]


def _combinations(index: MemoryIndex) -> None:
    """Rows holding every subset of the five words, in several lengths of filler; and
    rows holding none (so that each word is in under a fifth of the rows: kept)."""
    for j in range(400):
        index.apply(entry(1000 + j, f"unrelated question number {j} ?"))
    i = 0
    for mask in range(1, 32):
        held = [w for b, w in enumerate(WORDS) if mask >> b & 1]
        for pad in range(3):
            index.apply(entry(i, " ".join(held + ["filler"] * pad) + " ?"))
            i += 1


@pytest.mark.parametrize("limit", [1, 5, 10, 40, 100])
def test_the_strict_first_look_ranks_as_every_word_would(
    index: MemoryIndex, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """Rows holding all but one of the rarest words come first, in BM25 order; the rest
    (fewer words) follow: the same rows, and as many, as ranking every match."""
    monkeypatch.setattr(fts_terms, "STRICT_ABOVE", 0)
    _combinations(index)
    query = "alpha bravo charlie delta"
    con = index._connect()
    plan = index._terms.plan(con, query.split())
    assert not plan.common and index._terms.strict(con, plan.kept) is not None  # taken
    picked = search(index, query, limit=limit)
    every = search(index, query, limit=limit, every_word=True)
    assert len(picked) == len(every)
    strict_rows = 3 * 2 * 5  # rows holding >= 3 of the 4 words (and echo or not), x 3 pads
    same = min(limit, strict_rows)
    assert {h.qa_id for h in picked[:same]} == {h.qa_id for h in every[:same]}


def test_a_word_missing_from_the_turn_does_not_hide_it(
    index: MemoryIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The strict look asks for all but one word: a query with one word the turn lacks
    (a synonym the user chose) still finds it first."""
    monkeypatch.setattr(fts_terms, "STRICT_ABOVE", 0)
    _combinations(index)
    index.apply(entry(500, "alpha bravo charlie foxtrot"))
    hits = search(index, "alpha bravo charlie delta foxtrot", limit=3)
    assert "q500" in ids(hits)


def test_a_memory_most_rows_belong_to_is_filtered_without_its_token(tmp_path: Path) -> None:
    """The shared memory's token is in most rows: intersecting with it would read its
    whole list of rows on every query, so it is filtered in SQL; scoping holds."""
    idx = MemoryIndex(tmp_path / "memory.sqlite3")
    idx._terms = TermPicker(min_rows=0)
    for i in range(40):
        idx.apply(entry(i, f"How do I export report {i}?"))
    idx.apply(entry(100, "How do I export my own report?", user="alice"))
    con = idx._connect()
    from feedback_plugin.backends.fts_schema import owner_key, owner_token

    assert idx._terms.common_owner(con, owner_token(owner_key(None, None)))
    assert not idx._terms.common_owner(con, owner_token(owner_key(None, "alice")))
    shared = search(idx, "export own report", limit=50)
    assert len(shared) == 40 and "q100" not in ids(shared)
    assert ids(search(idx, "export own report", user="alice")) == ["q100"]
    idx.close()


# -- a small owner's rows ranked in Python (fts_rank) --------------------------------------


def test_a_small_owners_rows_are_ranked_as_fts5_bm25_ranks_them(tmp_path: Path) -> None:
    """The scores computed from the vocabulary's counts and FTS5's averages record are
    FTS5's bm25() scores, row for row (so the order is the same)."""
    from feedback_plugin.backends.fts_rank import rank_rows
    from feedback_plugin.backends.fts_schema import owner_key, owner_token

    idx = MemoryIndex(tmp_path / "memory.sqlite3")
    idx._terms = TermPicker(min_rows=0)
    texts = [
        "How do I export invoices from billing?",
        "Exporting an invoice: open Billing > History and choose Export.",
        "Where is the billing page?",
        "Invoices invoices invoices, and more invoices",
        "Can I print an invoice on Android? Yes: Share > Print.",
        "Naïve café résumé export",
    ]
    for i, text in enumerate(texts * 3):
        idx.apply(entry(i, text, f"answer {i} about export" if i % 2 else "see help", user="u"))
    for i in range(200):
        idx.apply(entry(1000 + i, f"other question {i} invoice", user=f"x{i % 7}"))
    con = idx._connect()
    tok = owner_token(owner_key(None, "u"))
    words = ["export", "invoice", "billing", "android"]
    match = f'tok:"{tok}" AND {{question answer}}:("export" OR "invoice" OR "billing" OR "android")'
    fts = con.execute(
        "SELECT t.qa_id, -bm25(turns_fts, 0.0, 1.0, 0.4) FROM turns_fts JOIN turns t"
        " ON t.id = turns_fts.rowid WHERE turns_fts MATCH ?",
        (match,),
    ).fetchall()
    candidates = con.execute(
        "SELECT t.session_id, t.qa_id, t.id, t.time, t.question, t.answer FROM turns_fts"
        " JOIN turns t ON t.id = turns_fts.rowid WHERE turns_fts MATCH ?",
        (match,),
    ).fetchall()
    ours = rank_rows(con, idx._terms, words, candidates, 100)
    assert ours is not None and len(ours) == len(fts) == 18
    want = dict(fts)
    for _, qa_id, score, _ in ours:
        assert score == pytest.approx(want[qa_id], rel=1e-6)
    idx.close()


def test_a_small_owners_search_finds_what_fts5_ranking_finds(
    index: MemoryIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fts_terms, "WALK_RATIO", 0)  # ranked here however small the index
    _help_desk(index)
    for i in range(30):
        index.apply(entry(600 + i, f"My own account setting {i} and the xylophone", user="me"))
    picked = search(index, "account xylophone setting", user="me", limit=5)
    assert len(picked) == 5 and all(h.key[0] == "me" for h in picked)
    every = search(index, "account xylophone setting", user="me", limit=5, every_word=True)
    assert [h.relevance for h in picked] == pytest.approx([h.relevance for h in every], rel=1e-4)


def test_a_word_count_cached_before_rows_left_still_ranks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counts are cached for a minute: after rows leave, a word may count more rows than
    the index holds (the log of a negative number, before the clamp)."""
    monkeypatch.setattr(fts_terms, "WALK_RATIO", 0)  # ranked here however small the index
    index = MemoryIndex(None)  # a small index: every word searched
    for i in range(3):
        index.apply(entry(i, f"reset the router {i}", user="me"))
    assert len(search(index, "reset router", user="me")) == 3  # the counts are cached
    for i in range(2):
        index.forget("me", "s1", f"q{i}")
    assert ids(search(index, "reset router", user="me")) == ["q2"]
    index.close()
