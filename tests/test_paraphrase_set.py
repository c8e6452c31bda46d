"""The paraphrase set of the memory benchmark keeps its promise.

``benchmarks/data/paraphrases.json`` (section (e) of ``benchmarks/bench_memory.py``,
recall by meaning) holds pairs of a stored help-centre question and a query that
asks the same thing in other words. A query that shares a word with its stored
question measures word matching, not meaning: these tests fail on such a pair.

Two words are "shared" when, after lowercasing and splitting into ``\\w+`` words
(the memory index's own query tokenizer), they are not stop words and
(1) a crude suffix-stripping stemmer makes them equal ("reset"/"resetting"),
(2) SQLite's FTS5 porter tokenizer, the memory index's, makes them equal, or
(3) they start with the same 5 letters ("subscribe"/"subscription").
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "paraphrases.json"
MIN_PAIRS = 66
PREFIX = 5  # words starting with this many equal letters count as one word

# Function words only: a query may repeat these. Everything else is a content word.
STOPWORDS = frozenset(
    """
    a an and are as at be but by can could do does for from had has have how i if in is it
    its me my of on or our should so than that the their them then there these they this to
    was we were what when where which who why will with would you your
    am been being did don doesn didn isn aren wasn won not no any all some
    """.split()  # noqa: SIM905 - a word list reads best as words
)

_WORD = re.compile(r"\w+", re.UNICODE)
_SUFFIXES = (
    "ations",
    "ation",
    "ments",
    "ment",
    "ings",
    "ing",
    "edly",
    "ers",
    "er",
    "ed",
    "ies",
    "es",
    "ly",
    "s",
)


def content_words(text: str) -> set[str]:
    """The words of ``text`` a query must not share: no stop words, no single letters."""
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 1}


def crude_stem(word: str) -> str:
    """Strip one common suffix, a doubled last consonant and a final e/y."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeiou":
        word = word[:-1]  # "resett" -> "reset"
    if len(word) >= 4 and word[-1] in "ey":
        word = word[:-1]  # "share"/"shar", "reply"/"repl"
    return word


@functools.cache
def _fts() -> sqlite3.Connection | None:
    con = sqlite3.connect(":memory:")
    try:
        con.execute(
            "CREATE VIRTUAL TABLE t USING fts5(x, tokenize='porter unicode61 remove_diacritics 2')"
        )
        con.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    except sqlite3.OperationalError:  # an SQLite without FTS5: rules (1) and (3) only
        return None
    return con


@functools.cache
def porter_stem(word: str) -> str:
    """``word`` as the memory index's FTS5 tokenizer (porter unicode61) stores it."""
    con = _fts()
    if con is None:
        return word
    rowid = con.execute("INSERT INTO t(x) VALUES (?)", (word,)).lastrowid
    terms = [t for (t,) in con.execute("SELECT term FROM v WHERE doc = ?", (rowid,))]
    return " ".join(terms) or word


def same_word(a: str, b: str) -> bool:
    return (
        a == b
        or crude_stem(a) == crude_stem(b)
        or porter_stem(a) == porter_stem(b)
        or (len(a) >= PREFIX and len(b) >= PREFIX and a[:PREFIX] == b[:PREFIX])
    )


def shared_words(query: str, question: str) -> list[tuple[str, str]]:
    """The (query word, question word) pairs that count as one word."""
    q_words, s_words = sorted(content_words(query)), sorted(content_words(question))
    return [(a, b) for a in q_words for b in s_words if same_word(a, b)]


def load_pairs() -> list[dict[str, str]]:
    pairs: list[dict[str, str]] = json.loads(DATA.read_text(encoding="utf-8"))["pairs"]
    return pairs


def test_enough_pairs_and_well_formed() -> None:
    pairs = load_pairs()
    assert len(pairs) >= MIN_PAIRS, f"{len(pairs)} pairs, the benchmark promises >= {MIN_PAIRS}"
    for i, pair in enumerate(pairs):
        assert set(pair) == {"stored_question", "stored_answer", "query"}, i
        for key, value in pair.items():
            assert isinstance(value, str) and value.strip(), (i, key)
        assert content_words(pair["query"]), (i, "a query of stop words only")


def test_no_duplicates() -> None:
    pairs = load_pairs()
    for key in ("query", "stored_question"):
        seen: dict[str, int] = {}
        for i, pair in enumerate(pairs):
            norm = " ".join(_WORD.findall(pair[key].lower()))
            assert norm not in seen, f"pairs {seen[norm]} and {i} have the same {key}"
            seen[norm] = i


def test_queries_share_no_content_word_with_their_stored_question() -> None:
    offenders = [
        f"pair {i}: {pair['query']!r} ~ {pair['stored_question']!r}: {shared}"
        for i, pair in enumerate(load_pairs())
        if (shared := shared_words(pair["query"], pair["stored_question"]))
    ]
    assert not offenders, "queries sharing words with their stored question:\n" + "\n".join(
        offenders
    )


@pytest.mark.parametrize(
    ("query", "question"),
    [
        ("I keep resetting things", "How do I reset my password?"),
        ("Passwords?", "How do I reset my password?"),
        ("Why isn't it synced?", "How do I force a manual sync?"),
        ("Can I stop the subscription?", "How do I subscribe?"),
        ("Any notifications?", "Can the app notify me?"),
        ("Is an old Android fine?", "Does the app run on older phones?"),
        ("Sharing is off", "How do I share a notebook?"),
        ("Two replies", "Can I reply to a comment?"),
    ],
)
def test_the_check_catches_shared_words(query: str, question: str) -> None:
    """The check itself: each of these pairs shares a word, stem or prefix."""
    assert shared_words(query, question)


def test_the_check_passes_other_words() -> None:
    assert not shared_words(
        "I forgot my login credentials, what now?", "How do I reset my password?"
    )
