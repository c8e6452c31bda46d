"""Analytics of session ratings and of memories that hurt.

The store is the hand-counted mix of ``tests/test_analytics.py`` (see its
table) with each conversation rated as a whole (``seed_rated``):

=======  =====  ==============  ==============  ======================
session  user   prompt_version  session rating  what the rating is
=======  =====  ==============  ==============  ======================
s1       -      v1              5 "helpful"     positive
s2       -      v1              2               negative
s3       alice  v2              5               positive
s4       alice  v2              "meh" (no score) unrated: a comment alone
s5       -      (none)          1               negative
s6       bob    v3              -               unrated: no rating
=======  =====  ==============  ==============  ======================

Every figure below is counted from these two tables; the Wilson intervals
are compared with :func:`analytics.wilson_interval` of the hand counts.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _postgres import POSTGRES_URL, require_postgres
from _redis import REDIS_URL, require_redis
from test_analytics import BASE, TURNS, seed

from feedback_plugin import SessionStore, analytics
from feedback_plugin.analytics import Filter, fed_counts, wilson_interval

RATINGS: list[tuple[str, str | None, str | None, int | None]] = [
    ("s1", None, "helpful", 5),
    ("s2", None, None, 2),
    ("s3", "alice", None, 5),
    ("s4", "alice", "meh", None),
    ("s5", None, None, 1),
]


def seed_rated(store: SessionStore) -> SessionStore:
    seed(store)
    for session, user, text, score in RATINGS:
        assert store.add_session_feedback(session, text, score, user=user)
    return store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SessionStore]:
    s = seed_rated(SessionStore(str(tmp_path / "store")))
    yield s
    s.close()


def ids(found: Any) -> list[str]:
    return sorted(e.qa_id for e in found)


def approx_interval(successes: int, n: int) -> tuple[Any, Any]:
    low, high = wilson_interval(successes, n)
    return pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12)


# -- the session_feedback filter --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("positive", [(None, "s1"), ("alice", "s3")]),
        ("negative", [(None, "s2"), (None, "s5")]),
        ("rated", [(None, "s1"), (None, "s2"), ("alice", "s3"), (None, "s5")]),
        ("unrated", [("alice", "s4"), ("bob", "s6")]),
    ],
)
def test_sessions_by_their_rating(
    store: SessionStore, kind: str, expected: list[tuple[str | None, str]]
) -> None:
    table = analytics.sessions(store, session_feedback=kind)  # type: ignore[arg-type]
    assert [(s.user_id, s.session_id) for s in table] == expected


def test_session_summaries_carry_the_rating(store: SessionStore) -> None:
    table = {s.session_id: s for s in analytics.sessions(store)}
    assert (table["s1"].session_score, table["s1"].session_text) == (5, "helpful")
    assert (table["s2"].session_score, table["s2"].session_text) == (2, None)
    assert (table["s4"].session_score, table["s4"].session_text) == (None, "meh")
    assert (table["s6"].session_score, table["s6"].session_text) == (None, None)
    # the figures still cover all the turns
    assert (table["s1"].turns, table["s1"].rated, table["s1"].positive) == (4, 3, 2)
    row = table["s1"].to_dict()
    assert (row["session_score"], row["session_text"]) == (5, "helpful")
    frame = analytics.sessions(store).to_pandas()
    assert list(frame["session_score"].fillna(0)) == [5, 2, 5, 0, 1, 0]
    html = analytics.sessions(store)._repr_html_()
    assert "session_score" in html and "helpful" in html


def test_session_filter_combines_with_turn_filters(store: SessionStore) -> None:
    # sessions rated up as a whole in which some answer was rated down: s1 (a3)
    both = analytics.sessions(store, session_feedback="positive", feedback="negative")
    assert [(s.session_id, s.turns, s.matching) for s in both] == [("s1", 4, 1)]
    assert [
        s.session_id for s in analytics.sessions(store, session_feedback="rated", user="alice")
    ] == ["s3"]
    assert len(analytics.sessions(store, session_feedback="negative", user="bob")) == 0
    assert [
        s.session_id for s in analytics.sessions(store, session_feedback="positive", limit=1)
    ] == ["s3"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"session_feedback": "positive"}, "a1 a2 a3 a4 c1 c2 c3"),
        ({"session_feedback": "negative"}, "b1 b2 e1"),
        ({"session_feedback": "rated"}, "a1 a2 a3 a4 b1 b2 c1 c2 c3 e1"),
        ({"session_feedback": "unrated"}, "d1 d2 f1"),
        ({"session_feedback": "positive", "user": "alice"}, "c1 c2 c3"),
        ({"session_feedback": "negative", "feedback": "negative"}, "e1"),
        ({"session_feedback": "positive", "session_id": "s1", "user": None}, "a1 a2 a3 a4"),
        ({"session_feedback": "negative", "session_id": "s1", "user": None}, ""),
        # the rating sits on a1, which the time filter leaves out: its session still counts
        ({"session_feedback": "positive", "since": BASE + timedelta(minutes=2)}, "a3 a4 c1 c2 c3"),
        ({"session_feedback": "unrated", "metadata": {"prompt_version": "v2"}}, "d1 d2"),
    ],
)
def test_entries_of_sessions_by_their_rating(
    store: SessionStore, filters: dict[str, Any], expected: str
) -> None:
    query = analytics.entries(store, **filters)
    assert ids(query) == expected.split()
    assert query.count() == len(expected.split())
    assert sorted(r["qa_id"] for r in query.raw()) == expected.split()


def test_exports_of_sessions_by_their_rating(store: SessionStore) -> None:
    out = io.StringIO()
    assert analytics.export_jsonl(store, out, "raw", session_feedback="negative") == 3
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["qa_id"] for r in lines] == ["b1", "b2", "e1"]  # session by session, in order
    # the liked turns of conversations liked as a whole (e1's correction is in s5: out)
    chat = list(analytics.chat_records(store, session_feedback="positive"))
    assert len(chat) == 5
    assert [
        r["metadata"]["qa_id"] for r in analytics.eval_records(store, session_feedback="negative")
    ] == ["e1"]


def test_filter_validation(store: SessionStore) -> None:
    with pytest.raises(ValueError, match="session_feedback must be one of positive, negative"):
        Filter(session_feedback="great")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hurting must be True, False or None"):
        Filter(hurting="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="session_feedback must be one of"):
        analytics.sessions(store, session_feedback="good")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="session_feedback must be one of"):
        analytics.stats(store, session_feedback="up")  # type: ignore[arg-type]
    assert not Filter(session_feedback="rated").is_empty
    assert not Filter(hurting=False).is_empty
    # one entry in hand cannot say how its session was rated
    with pytest.raises(ValueError, match="session_feedback needs each session's rating"):
        Filter(session_feedback="positive").matches(TURNS[0])


# -- stats: the session-level positive rate ------------------------------------------------------


def test_stats_session_level_by_prompt_version(store: SessionStore) -> None:
    metrics = analytics.stats(store, by="prompt_version")
    v1, v2, v3, none = metrics
    # v1: s1 (5) and s2 (2): 1 of 2 rated sessions positive
    assert (v1.sessions, v1.rated_sessions, v1.positive_sessions) == (2, 2, 1)
    assert v1.session_positive_rate == 0.5
    assert (v1.session_ci_low, v1.session_ci_high) == approx_interval(1, 2)
    assert (v1.session_ci_low, v1.session_ci_high) == (
        pytest.approx(0.0945, abs=1e-4),
        pytest.approx(0.9055, abs=1e-4),
    )
    # v2: s3 (5) and s4 (a comment alone: not rated): 1 of 1
    assert (v2.sessions, v2.rated_sessions, v2.positive_sessions) == (2, 1, 1)
    assert v2.session_positive_rate == 1.0
    assert (v2.session_ci_low, v2.session_ci_high) == approx_interval(1, 1)
    assert v2.session_ci_low == pytest.approx(0.2065, abs=1e-4) and v2.session_ci_high == 1.0
    # v3: s6, never rated: nothing known
    assert (v3.rated_sessions, v3.positive_sessions, v3.session_positive_rate) == (0, 0, None)
    assert (v3.session_ci_low, v3.session_ci_high) == (0.0, 1.0)
    # no prompt_version: s5 (1): 0 of 1
    assert (none.rated_sessions, none.positive_sessions, none.session_positive_rate) == (1, 0, 0.0)
    assert (none.session_ci_low, none.session_ci_high) == approx_interval(0, 1)
    # the turn-level figures are untouched by the session ratings
    assert (v1.turns, v1.rated, v1.positive, v1.positive_rate) == (6, 4, 2, 0.5)
    assert "v1: 6 turns, 2/4 positive, sessions 1/2 positive" in repr(metrics)


def test_stats_session_level_overall_and_filtered(store: SessionStore) -> None:
    (overall,) = analytics.stats(store)
    assert (overall.sessions, overall.rated_sessions, overall.positive_sessions) == (6, 4, 2)
    assert (overall.session_ci_low, overall.session_ci_high) == approx_interval(2, 4)
    # the first turn of s1 (a1, which holds its rating) is left out by the time filter
    late = analytics.stats(store, by="prompt_version", since=BASE + timedelta(minutes=2))
    v1 = late.group("v1")
    assert (v1.turns, v1.sessions, v1.rated_sessions, v1.positive_sessions) == (4, 2, 2, 1)
    # only the turns of conversations rated up: v1 (s1) and v2 (s3)
    liked = analytics.stats(store, by="prompt_version", session_feedback="positive")
    assert [(g.group, g.turns, g.rated, g.positive) for g in liked] == [
        ("v1", 4, 3, 2),
        ("v2", 3, 3, 3),
    ]
    assert [(g.rated_sessions, g.positive_sessions) for g in liked] == [(1, 1), (1, 1)]
    disliked = analytics.stats(store, session_feedback="negative")
    assert [(g.turns, g.sessions, g.rated_sessions, g.positive_sessions) for g in disliked] == [
        (3, 2, 2, 0)
    ]
    assert (disliked[0].session_ci_low, disliked[0].session_ci_high) == approx_interval(0, 2)


def test_a_session_counts_in_every_group_it_has_turns_in(tmp_path: Path) -> None:
    with SessionStore(str(tmp_path / "mixed")) as s:
        s.record("both", "q1", "a1", metadata={"model": "a"})
        s.record("both", "q2", "a2", metadata={"model": "b"})
        s.record("only-b", "q3", "a3", metadata={"model": "b"})
        assert s.session_thumbs("both", up=True)
        assert s.session_thumbs("only-b", up=False)
        a, b = analytics.stats(s, by="model")
        assert (a.group, a.sessions, a.rated_sessions, a.positive_sessions) == ("a", 1, 1, 1)
        assert (b.group, b.sessions, b.rated_sessions, b.positive_sessions) == ("b", 2, 2, 1)
        # cleared: the session is unrated again
        assert s.delete_session_feedback("both")
        a, b = analytics.stats(s, by="model")
        assert (a.rated_sessions, b.rated_sessions, b.positive_sessions) == (0, 1, 0)


def test_metrics_tables_show_the_session_columns(store: SessionStore, tmp_path: Path) -> None:
    metrics = analytics.stats(store, by="prompt_version")
    frame = metrics.to_pandas()
    for column in ("rated_sessions", "positive_sessions", "session_positive_rate",
                   "session_ci_low", "session_ci_high"):  # fmt: skip
        assert column in frame.columns
        assert column in metrics._repr_html_()
    assert frame.loc["v1", "session_positive_rate"] == 0.5
    assert frame.loc["v2", "rated_sessions"] == 1
    assert metrics.to_dicts()[0]["session_ci_high"] == pytest.approx(wilson_interval(1, 2)[1])

    import matplotlib

    matplotlib.use("Agg")
    ax = analytics.plot_positive_rate(metrics, level="sessions")
    assert len(ax.patches) == 3  # v1, v2, (none): v3 has no rated session
    assert ax.get_title() == "Session positive rate by prompt_version"
    with pytest.raises(ValueError, match="level must be 'turns' or 'sessions'"):
        analytics.plot_positive_rate(metrics, level="users")  # type: ignore[arg-type]


# -- memories that hurt ------------------------------------------------------------------------


def hurt_store(location: str) -> tuple[SessionStore, dict[str, str]]:
    """Three liked memories of ann and one of bob, fed to rated answers:

    ========  ====  =========================  =====
    memory    user  answers it fed, rated      hurts
    ========  ====  =========================  =====
    worst     ann   down, down, down           yes (3 - / 0 +)
    mixed     ann   down, down, up             yes (2 - / 1 +)
    even      ann   down, up                   no  (1 - / 1 +)
    bobs      bob   down, down                 yes (2 - / 0 +)
    ========  ====  =========================  =====
    """
    s = SessionStore(location)
    memories = {}
    for name, user in (("worst", "ann"), ("mixed", "ann"), ("even", "ann"), ("bobs", "bob")):
        memories[name] = s.record(f"m-{name}", f"liked {name}?", "yes.", user=user).qa_id
        assert s.thumbs(f"m-{name}", memories[name], up=True, user=user)
    fed = {"worst": "---", "mixed": "--+", "even": "-+", "bobs": "--"}
    for name, verdicts in fed.items():
        user = "bob" if name == "bobs" else "ann"
        for n, verdict in enumerate(verdicts):
            session = f"a-{name}-{n}"
            answer = s.record(
                session, "q?", "a.", user=user, memory_ids=[("m-" + name, memories[name])]
            )
            assert s.thumbs(session, answer.qa_id, up=verdict == "+", user=user)
    return s, memories


def test_memories_that_hurt_worst_first(tmp_path: Path) -> None:
    s, m = hurt_store(str(tmp_path / "hurt"))
    with s:
        everyone = analytics.memories_that_hurt(s)
        assert [e.qa_id for e in everyone] == [m["worst"], m["bobs"], m["mixed"]]
        assert [fed_counts(e) for e in everyone] == [(3, 0), (2, 0), (2, 1)]
        assert all(e.hurts and not e.remembered for e in everyone)
        ann = analytics.memories_that_hurt(s, user="ann")
        assert [e.qa_id for e in ann] == [m["worst"], m["mixed"]]
        assert set(ann[1].fed_outcomes.values()) == {"negative", "positive"}
        # the same turns as a filter, in the store's order
        assert ids(analytics.entries(s, hurting=True)) == sorted(
            [m["worst"], m["bobs"], m["mixed"]]
        )
        assert m["even"] in ids(analytics.entries(s, hurting=False))
        assert [x.session_id for x in analytics.sessions(s, hurting=True, user="ann")] == [
            "m-worst", "m-mixed",
        ]  # fmt: skip
        (overall,) = analytics.stats(s, hurting=True)
        assert (overall.turns, overall.positive) == (3, 3)
        # a table: fed counts in Jupyter and in pandas
        html = everyone._repr_html_()
        assert "fed_negative" in html and "fed_positive" in html
        frame = everyone.to_pandas()
        assert list(frame["fed_negative"]) == [3, 2, 2]
        assert list(frame["fed_positive"]) == [0, 0, 1]
        with pytest.raises(ValueError, match="hurting"):
            analytics.memories_that_hurt(s, hurting=False)
        # rated again: its record starts over
        assert s.thumbs("m-worst", m["worst"], up=True, user="ann")
        assert [e.qa_id for e in analytics.memories_that_hurt(s, user="ann")] == [m["mixed"]]
        assert "memories_that_hurt" in analytics.__all__


def test_tables_show_memory_ids(tmp_path: Path) -> None:
    s, m = hurt_store(str(tmp_path / "hurt"))
    with s:
        fed = analytics.entries(s, session_id="a-worst-0", user="ann").head()
        assert fed[0].memory_ids == [m["worst"]]
        html = fed._repr_html_()
        assert "memory_ids" in html and m["worst"] in html
        assert "fed_negative" not in html  # an answer feeds nothing
        plain = analytics.entries(s, session_id="m-even", user="ann").head()._repr_html_()
        assert "memory_ids" not in plain


# -- the session filter on the server backends -------------------------------------------------


@pytest.fixture(params=["redis", "postgres"])
def server_store(request: pytest.FixtureRequest) -> Iterator[SessionStore]:
    if request.param == "redis":
        require_redis("Redis analytics")
        location = REDIS_URL
    else:
        require_postgres("PostgreSQL analytics")
        location = POSTGRES_URL
    s = SessionStore(location, namespace=f"test-{uuid.uuid4().hex}")
    try:
        yield seed_rated(s)
    finally:
        s.close()
        s.backend.drop()  # type: ignore[attr-defined]
        s.backend.close()


def test_session_filter_on_a_server(server_store: SessionStore) -> None:
    s = server_store
    assert [x.session_id for x in analytics.sessions(s, session_feedback="negative")] == [
        "s2",
        "s5",
    ]
    assert [x.session_id for x in analytics.sessions(s, session_feedback="unrated")] == ["s4", "s6"]
    assert ids(analytics.entries(s, session_feedback="positive", user="alice")) == [
        "c1",
        "c2",
        "c3",
    ]
    v1 = analytics.stats(s, by="prompt_version").group("v1")
    assert (v1.rated_sessions, v1.positive_sessions) == (2, 1)
    assert (v1.session_ci_low, v1.session_ci_high) == approx_interval(1, 2)
