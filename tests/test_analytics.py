"""Analytics: queries, metrics, exports and import, on diskcache and on Redis.

Every test runs on a store holding a known mix of 13 turns (``seed``), and
every expected number below was counted by hand from that table:

=====  =======  =====  ======  =====  ========  ==========  ==============  =========
qa_id  session  user   day     score  comment   correction  prompt_version  other
=====  =======  =====  ======  =====  ========  ==========  ==============  =========
a1     s1       -      May 1   5                            v1              model a, temperature 0.2
a2     s1       -      May 1   4                            v1              time with microseconds
a3     s1       -      May 1   2      wrong                 v1
a4     s1       -      May 1   -      meh                   v1
b1     s2       -      May 2   3      ok                    v1
b2     s2       -      May 2   -                            v1
c1     s3       alice  May 3   5                            v2              model b
c2     s3       alice  May 3   5                            v2
c3     s3       alice  May 3   4      almost    Better.     v2
d1     s4       alice  May 4   3                            v2
d2     s4       alice  May 4   -                            v2
e1     s5       -      May 5   1                fixed       (none)
f1     s6       bob    May 6   -                            v3
=====  =======  =====  ======  =====  ========  ==========  ==============  =========

Redis: a real server (``$FEEDBACK_PLUGIN_TEST_REDIS``, default db 15 on
127.0.0.1:6379), a namespace ``test-<uuid>`` per store, its keys dropped at
teardown. No Redis answering: those tests fail when ``$CI`` is set and are
skipped otherwise.
"""

from __future__ import annotations

import io
import json
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from _redis import REDIS_URL, require_redis

from feedback_plugin import PositiveMemoryRetriever, SessionQAEntry, SessionStore, analytics
from feedback_plugin.analytics import ALL_USERS, Filter, ImportFormatError, wilson_interval
from feedback_plugin.codec import parse_light, parse_light_time

BASE = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)


class Stores:
    """Opens stores of one backend; closes them (and drops Redis keys) at teardown.

    ``stores("name")`` opens the store called ``name`` (the same data every
    time); ``stores.args("name")`` is the CLI's ``--store ... --namespace ...``.
    """

    def __init__(self, backend: str, root: Path) -> None:
        self.backend = backend
        self.root = root
        self.prefix = f"test-{uuid.uuid4().hex}"
        self._opened: list[SessionStore] = []

    def location(self, name: str) -> tuple[str, str | None]:
        if self.backend == "redis":
            return REDIS_URL, f"{self.prefix}-{name}"
        return str(self.root / name), None

    def __call__(self, name: str = "main") -> SessionStore:
        location, namespace = self.location(name)
        store = SessionStore(location, namespace=namespace)
        self._opened.append(store)
        return store

    def args(self, name: str = "main") -> list[str]:
        location, namespace = self.location(name)
        return ["--store", location] + (["--namespace", namespace] if namespace else [])

    def close(self) -> None:
        for store in self._opened:
            store.close()
        if self.backend == "redis":  # every namespace this test used, also via the CLI
            for store in self._opened:
                store.backend.drop()  # type: ignore[attr-defined]
                store.backend.close()


@pytest.fixture(params=["disk", "redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "redis":
        require_redis("Redis analytics")
    factory = Stores(str(request.param), tmp_path)
    yield factory
    factory.close()


def turn(
    qa_id: str,
    session: str,
    day: int,
    minute: int,
    score: int | None = None,
    *,
    user: str | None = None,
    text: str | None = None,
    correction: str | None = None,
    meta: dict[str, Any] | None = None,
    micro: int = 0,
) -> SessionQAEntry:
    time = BASE + timedelta(days=day - 1, minutes=minute, microseconds=micro)
    return SessionQAEntry(
        qa_id=qa_id,
        session_id=session,
        question=f"question {qa_id}?",
        answer=f"answer {qa_id}.",
        context=[f"doc for {qa_id}"],
        time=time,
        feedback_score=score,
        feedback_text=text,
        feedback_time=None if score is None and text is None else time + timedelta(seconds=30),
        user_id=user,
        metadata={} if meta is None else meta,
        correction=correction,
    )


V1 = {"prompt_version": "v1", "model": "a"}
V2 = {"prompt_version": "v2", "model": "b"}

TURNS = [
    turn("a1", "s1", 1, 0, 5, meta={**V1, "temperature": 0.2}),
    turn("a2", "s1", 1, 1, 4, meta=V1, micro=250_000),
    turn("a3", "s1", 1, 2, 2, text="wrong", meta=V1),
    turn("a4", "s1", 1, 3, None, text="meh", meta=V1),
    turn("b1", "s2", 2, 0, 3, text="ok", meta=V1),
    turn("b2", "s2", 2, 1, None, meta=V1),
    turn("c1", "s3", 3, 0, 5, user="alice", meta=V2),
    turn("c2", "s3", 3, 1, 5, user="alice", meta=V2),
    turn("c3", "s3", 3, 2, 4, user="alice", text="almost", correction="Better.", meta=V2),
    turn("d1", "s4", 4, 0, 3, user="alice", meta=V2),
    turn("d2", "s4", 4, 1, None, user="alice", meta=V2),
    turn("e1", "s5", 5, 0, 1, correction="fixed"),
    turn("f1", "s6", 6, 0, None, user="bob", meta={"prompt_version": "v3"}),
]


def seed(store: SessionStore) -> SessionStore:
    assert store.import_entries(TURNS, batch_size=5) == 13
    return store


@pytest.fixture
def store(stores: Stores) -> SessionStore:
    return seed(stores())


def ids(found: Any) -> list[str]:
    return sorted(e.qa_id for e in found)


# -- queries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, "a1 a2 a3 a4 b1 b2 c1 c2 c3 d1 d2 e1 f1"),
        ({"feedback": "positive"}, "a1 a2 c1 c2 c3"),
        ({"feedback": "negative"}, "a3 e1"),
        ({"feedback": "rated"}, "a1 a2 a3 b1 c1 c2 c3 d1 e1"),
        ({"feedback": "unrated"}, "a4 b2 d2 f1"),
        ({"has_text": True}, "a3 a4 b1 c3"),
        ({"has_text": False, "feedback": "unrated"}, "b2 d2 f1"),
        ({"min_score": 2, "max_score": 4}, "a2 a3 b1 c3 d1"),
        ({"min_score": 5}, "a1 c1 c2"),
        ({"feedback": "positive", "max_score": 4}, "a2 c3"),
        ({"user": "alice"}, "c1 c2 c3 d1 d2"),
        ({"user": None}, "a1 a2 a3 a4 b1 b2 e1"),
        ({"user": "bob"}, "f1"),
        ({"user": "nobody"}, ""),
        ({"session_id": "s1"}, "a1 a2 a3 a4"),
        ({"session_id": "s3", "user": "alice"}, "c1 c2 c3"),
        ({"session_id": "s3", "user": None}, ""),
        ({"metadata": {"prompt_version": "v2"}}, "c1 c2 c3 d1 d2"),
        ({"metadata": {"prompt_version": "v1", "model": "a"}}, "a1 a2 a3 a4 b1 b2"),
        ({"metadata": {"temperature": 0.2}}, "a1"),
        ({"metadata": {"temperature": "0.2"}}, "a1"),  # as a command line gives it
        ({"metadata": {"prompt_version": "v9"}}, ""),
        (
            {"since": datetime(2024, 5, 3, tzinfo=timezone.utc), "until": datetime(2024, 5, 5)},
            "c1 c2 c3 d1 d2",
        ),
        (
            {"since": BASE + timedelta(minutes=1, microseconds=250_000)},
            "a2 a3 a4 b1 b2 c1 c2 c3 d1 d2 e1 f1",
        ),
        ({"until": BASE + timedelta(minutes=1, microseconds=250_000)}, "a1"),
        ({"feedback": "negative", "user": None}, "a3 e1"),
    ],
)
def test_entries_filters(store: SessionStore, filters: dict[str, Any], expected: str) -> None:
    query = analytics.entries(store, **filters)
    assert ids(query) == expected.split()
    assert query.count() == len(expected.split())
    assert sorted(r["qa_id"] for r in query.raw()) == expected.split()


def test_entries_are_whole_models(store: SessionStore) -> None:
    (c3,) = analytics.entries(store, session_id="s3", user="alice", has_text=True)
    assert c3 == TURNS[8]
    assert c3.correction == "Better."


def test_entries_see_turns_still_queued(stores: Stores) -> None:
    live = stores("live")
    first = live.record("s1", "Q1?", "A1.", metadata={"prompt_version": "v1"})
    second = live.record("s1", "Q2?", "A2.", user="ann", metadata={"prompt_version": "v2"})
    assert live.thumbs("s1", first.qa_id, up=True)
    assert live.add_feedback("s1", second.qa_id, "no", 1, user="ann", correction="A2!")
    assert ids(analytics.entries(live, feedback="positive")) == [first.qa_id]
    metrics = analytics.stats(live, by="prompt_version")
    assert [(g.group, g.turns, g.positive, g.negative) for g in metrics] == [
        ("v1", 1, 1, 0),
        ("v2", 1, 0, 1),
    ]
    third = live.record("s2", "Q3?", "A3.")  # still in the write-behind queue
    assert third.qa_id in ids(analytics.entries(live))


def test_head_and_tables(store: SessionStore) -> None:
    head = analytics.entries(store, feedback="positive").head(2)
    assert len(head) == 2 and head.more
    whole = analytics.entries(store, feedback="positive").head(5)
    assert len(whole) == 5 and not whole.more
    assert "5 turns" in whole._repr_html_()
    frame = analytics.entries(store, user="alice").to_pandas()
    assert sorted(frame["qa_id"]) == ["c1", "c2", "c3", "d1", "d2"]
    assert list(frame.columns)[:4] == ["qa_id", "session_id", "question", "answer"]


def test_filter_validation() -> None:
    with pytest.raises(ValueError, match="feedback must be one of"):
        Filter(feedback="good")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="above max_score"):
        Filter(min_score=4, max_score=2)
    with pytest.raises(ValueError, match="feedback_score"):
        Filter(min_score=6)
    with pytest.raises(ValueError, match="session_id"):
        Filter(session_id="")
    with pytest.raises(ValueError, match="user"):
        Filter(user="")
    naive = Filter(since=datetime(2024, 5, 1))
    assert naive.since == datetime(2024, 5, 1, tzinfo=timezone.utc)
    assert Filter().is_empty and Filter(user=ALL_USERS).is_empty
    assert not Filter(user=None).is_empty
    assert Filter(feedback="positive").matches(TURNS[0])
    assert not Filter(feedback="positive").matches(TURNS[2])


def test_light_parse_matches_full_parse() -> None:
    """stats reads only the tail of a payload: keys hidden in text and metadata must not fool it."""
    tricky = SessionQAEntry(
        qa_id='q,"session_id":"x"',
        session_id='s,"feedback_text":"x"',
        question='{"qa_id":"no",,"feedback_text":1}',
        answer=',"time":"1999-01-01T00:00:00Z"',
        context=['","feedback_text":', ',"session_id":"y"'],
        time=BASE,
        feedback_text=',"feedback_score":5',
        feedback_score=2,
        user_id='u,"metadata":{}',
        metadata={"feedback_text": "m", "session_id": "m", "time": "m", "nested": {"a": [1]}},
    )
    for entry in (tricky, TURNS[1], TURNS[8]):
        payload = entry.to_json()
        full = json.loads(payload)
        light = parse_light_time(payload)
        for key in ("session_id", "user_id", "time", "feedback_score", "feedback_text",
                    "metadata", "correction"):  # fmt: skip
            assert light[key] == full[key], key
    escaped = SessionQAEntry(qa_id="q", session_id="\ud800", question="", answer="")
    assert parse_light(escaped.to_json())["session_id"] == "\ud800"


# -- sessions -----------------------------------------------------------------------------


def test_sessions(store: SessionStore) -> None:
    table = analytics.sessions(store)
    assert [(s.user_id, s.session_id) for s in table] == [
        (None, "s1"), (None, "s2"), ("alice", "s3"), ("alice", "s4"), (None, "s5"), ("bob", "s6"),
    ]  # fmt: skip
    s1 = table[0]
    assert (s1.turns, s1.rated, s1.positive, s1.negative, s1.with_text) == (4, 3, 2, 1, 2)
    assert s1.mean_score == pytest.approx((5 + 4 + 2) / 3)
    assert s1.first_time == BASE and s1.last_time == BASE + timedelta(minutes=3)
    assert s1.first_question == "question a1?"
    assert s1.matching == 4
    assert s1.to_dict()["first_time"] == "2024-05-01T10:00:00+00:00"


def test_sessions_filtered(store: SessionStore) -> None:
    negative = analytics.sessions(store, feedback="negative")
    assert [(s.session_id, s.turns, s.matching) for s in negative] == [("s1", 4, 1), ("s5", 1, 1)]
    assert [s.session_id for s in analytics.sessions(store, user="alice")] == ["s3", "s4"]
    assert [s.session_id for s in analytics.sessions(store, limit=2)] == ["s5", "s6"]
    assert len(analytics.sessions(store, limit=0)) == 0
    since = analytics.sessions(store, since=datetime(2024, 5, 4, tzinfo=timezone.utc))
    assert [s.session_id for s in since] == ["s4", "s5", "s6"]
    texts = analytics.sessions(store, has_text=True, metadata={"prompt_version": "v1"})
    assert [(s.session_id, s.matching) for s in texts] == [("s1", 2), ("s2", 1)]
    assert analytics.sessions(store, session_id="s3", user="alice")[0].turns == 3
    frame = analytics.sessions(store).to_pandas()
    assert list(frame["turns"]) == [4, 2, 3, 2, 1, 1]


# -- metrics -------------------------------------------------------------------------------


def test_wilson_interval_by_hand() -> None:
    # p = 3/4, n = 4, z = 1.96: centre (0.75 + 0.4802) / 1.9604 = 0.6275,
    # half-width 1.96 * sqrt(0.046875 + 0.060024) / 1.9604 = 0.3269
    low, high = wilson_interval(3, 4)
    assert (low, high) == (pytest.approx(0.3006, abs=1e-4), pytest.approx(0.9544, abs=1e-4))
    low, high = wilson_interval(2, 4)  # centre 0.5, half-width 0.3500
    assert (low, high) == (pytest.approx(0.1500, abs=1e-4), pytest.approx(0.8500, abs=1e-4))
    low, high = wilson_interval(0, 1)  # centre = half-width = 1.9207 / 4.8415 = 0.3967
    assert (low, high) == (0.0, pytest.approx(0.7935, abs=1e-4))
    assert wilson_interval(0, 0) == (0.0, 1.0)  # nothing known
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_stats_by_prompt_version(store: SessionStore) -> None:
    metrics = analytics.stats(store, by="prompt_version")
    assert [g.group for g in metrics] == ["v1", "v2", "v3", None]
    v1, v2, v3, none = metrics
    # v1: a1..a4, b1, b2; scores 5 4 2 3; sessions s1 (has the 2) and s2
    assert (v1.turns, v1.rated, v1.positive, v1.negative, v1.with_text) == (6, 4, 2, 1, 3)
    assert v1.mean_score == 3.5 and v1.positive_rate == 0.5
    assert (v1.ci_low, v1.ci_high) == (
        pytest.approx(0.1500, abs=1e-4),
        pytest.approx(0.85, abs=1e-4),
    )
    assert (v1.sessions, v1.turns_per_session, v1.negative_sessions) == (2, 3.0, 1)
    assert v1.negative_session_share == 0.5
    # v2: c1..c3, d1, d2; scores 5 5 4 3; sessions s3, s4 of alice
    assert (v2.turns, v2.rated, v2.positive, v2.negative, v2.with_text) == (5, 4, 3, 0, 1)
    assert v2.mean_score == 4.25 and v2.positive_rate == 0.75
    assert (v2.ci_low, v2.ci_high) == (
        pytest.approx(0.3006, abs=1e-4),
        pytest.approx(0.9544, abs=1e-4),
    )
    assert (v2.sessions, v2.turns_per_session, v2.negative_session_share) == (2, 2.5, 0.0)
    # v3: one unrated turn: 0 of 0
    assert (v3.turns, v3.rated, v3.mean_score, v3.positive_rate) == (1, 0, None, None)
    assert (v3.ci_low, v3.ci_high) == (0.0, 1.0)
    assert (v3.sessions, v3.negative_session_share) == (1, 0.0)
    # no prompt_version: e1, score 1: 0 of 1
    assert none.label == "(none)"
    assert (none.turns, none.rated, none.negative, none.mean_score, none.positive_rate) == (
        1, 1, 1, 1.0, 0.0,
    )  # fmt: skip
    assert none.ci_high == pytest.approx(0.7935, abs=1e-4)
    assert none.negative_session_share == 1.0
    assert metrics.group("v2") is v2


def test_stats_overall_and_filtered(store: SessionStore) -> None:
    (overall,) = analytics.stats(store)
    assert (overall.turns, overall.rated, overall.positive, overall.negative) == (13, 9, 5, 2)
    assert overall.mean_score == pytest.approx(32 / 9)  # 5+4+2+3+5+5+4+3+1
    assert overall.positive_rate == pytest.approx(5 / 9)
    assert overall.sessions == 6 and overall.turns_per_session == pytest.approx(13 / 6)
    assert overall.negative_session_share == pytest.approx(2 / 6)  # s1, s5
    (alice,) = analytics.stats(store, user="alice")
    assert (alice.turns, alice.rated, alice.positive, alice.sessions) == (5, 4, 3, 2)
    by_model = analytics.stats(store, by="model", since=datetime(2024, 5, 2, tzinfo=timezone.utc))
    assert [(g.group, g.turns) for g in by_model] == [("a", 2), ("b", 5), (None, 2)]
    by_temp = analytics.stats(store, by="temperature", session_id="s1", user=None)
    assert [(g.group, g.turns, g.rated) for g in by_temp] == [(0.2, 1, 1), (None, 3, 2)]
    assert len(analytics.stats(store, user="nobody")) == 0


def test_metrics_tables_and_plot(store: SessionStore, tmp_path: Path) -> None:
    metrics = analytics.stats(store, by="prompt_version")
    frame = metrics.to_pandas()
    assert list(frame.index) == ["v1", "v2", "v3", "(none)"]
    assert frame.index.name == "prompt_version"
    assert frame.loc["v2", "positive_rate"] == 0.75
    html_text = metrics._repr_html_()
    assert "prompt_version" in html_text and "(none)" in html_text
    assert "v1: 6 turns, 2/4 positive" in repr(metrics)

    import matplotlib

    matplotlib.use("Agg")
    ax = analytics.plot_positive_rate(metrics)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["v1", "v2", "v3", "(none)"]
    assert len(ax.patches) == 3  # no bar for v3: nothing rated
    ax.figure.savefig(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_optional_dependencies_missing(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = analytics.stats(store, by="prompt_version")
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(
        ImportError, match=r"needs pandas: pip install 'feedback-plugin\[analytics\]'"
    ):
        metrics.to_pandas()
    with pytest.raises(ImportError, match="needs pandas"):
        analytics.entries(store).to_pandas()
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"needs matplotlib: pip install"):
        analytics.plot_positive_rate(metrics)


# -- notebook rendering -----------------------------------------------------------------------


def test_repr_html_escapes_everything() -> None:
    evil = SessionQAEntry(
        qa_id="<b>id</b>",
        session_id="s",
        question="<script>alert('q')</script>",
        answer="a & b",
        feedback_text='"><img src=x onerror=alert(1)>',
        metadata={"<k>": "<v>"},
    )
    html_text = evil._repr_html_()
    assert "<script>" not in html_text and "<img" not in html_text and "<b>" not in html_text
    assert "&lt;script&gt;alert(&#x27;q&#x27;)&lt;/script&gt;" in html_text
    assert "a &amp; b" in html_text
    table = analytics.EntryTable([evil])._repr_html_()
    assert "<script>" not in table and "&lt;script&gt;" in table and "<img" not in table


# -- exports ----------------------------------------------------------------------------------


def test_chat_export(store: SessionStore) -> None:
    records = list(analytics.chat_records(store))
    # positive a1 a2 c1 c2 c3 (corrected) and the corrected, negative e1
    by_question = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in records}
    assert by_question == {
        "question a1?": "answer a1.",
        "question a2?": "answer a2.",
        "question c1?": "answer c1.",
        "question c2?": "answer c2.",
        "question c3?": "Better.",  # the correction wins
        "question e1?": "fixed",
    }
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in records)
    (with_system,) = analytics.chat_records(store, system="Be kind.", session_id="s1", min_score=5)
    assert with_system == {
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "question a1?"},
            {"role": "assistant", "content": "answer a1."},
        ]
    }
    v2 = list(analytics.chat_records(store, metadata={"prompt_version": "v2"}))
    assert len(v2) == 3


def test_eval_export(store: SessionStore) -> None:
    records = {r["metadata"]["qa_id"]: r for r in analytics.eval_records(store)}
    assert sorted(records) == ["a1", "a2", "c1", "c2", "c3", "e1"]
    c3 = records["c3"]
    assert c3["inputs"] == {"question": "question c3?"}
    assert c3["outputs"] == {"answer": "Better."}
    assert c3["metadata"]["reference"] == "correction"
    assert c3["metadata"]["original_answer"] == "answer c3."
    assert c3["metadata"]["feedback_score"] == 4 and c3["metadata"]["feedback_text"] == "almost"
    assert c3["metadata"]["user_id"] == "alice" and c3["metadata"]["context"] == ["doc for c3"]
    assert c3["metadata"]["run_metadata"] == V2
    assert records["a1"]["outputs"] == {"answer": "answer a1."}
    assert records["a1"]["metadata"]["reference"] == "answer"
    assert records["e1"]["outputs"] == {"answer": "fixed"}


def test_export_jsonl_files(store: SessionStore, tmp_path: Path) -> None:
    assert analytics.export_jsonl(store, tmp_path / "chat.jsonl", "chat") == 6
    lines = (tmp_path / "chat.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6 and all("messages" in json.loads(line) for line in lines)
    buffer = io.StringIO()
    assert analytics.export_jsonl(store, buffer, "eval", feedback="negative") == 1  # e1
    assert json.loads(buffer.getvalue())["outputs"] == {"answer": "fixed"}
    assert analytics.export_jsonl(store, tmp_path / "raw.jsonl", "raw", user="alice") == 5
    with pytest.raises(ValueError, match="format must be one of"):
        analytics.export_jsonl(store, buffer, "csv")  # type: ignore[arg-type]


def test_export_progress_bar(store: SessionStore, capsys: pytest.CaptureFixture[str]) -> None:
    buffer = io.StringIO()
    assert analytics.export_jsonl(store, buffer, "raw", progress=True) == 13
    assert "export raw" in capsys.readouterr().err  # tqdm's bar on stderr


# -- import -------------------------------------------------------------------------------------


def test_raw_round_trip_is_exact(stores: Stores, store: SessionStore, tmp_path: Path) -> None:
    path = tmp_path / "raw.jsonl"
    assert analytics.export_jsonl(store, path, "raw") == 13
    copy = stores("copy")
    assert analytics.import_jsonl(copy, path) == 13
    for user in (None, "alice", "bob"):
        assert copy.list_sessions(user=user) == store.list_sessions(user=user)
        for session_id in store.list_sessions(user=user):
            original = store.get_session(session_id, user=user)
            restored = copy.get_session(session_id, user=user)
            assert [e.model_dump() for e in restored] == [e.model_dump() for e in original]
    assert sorted(e.model_dump_json() for e in copy.iter_entries()) == sorted(
        e.model_dump_json() for e in TURNS
    )
    a2 = copy.get_entry("s1", "a2")
    assert a2 is not None and a2.time == BASE + timedelta(minutes=1, microseconds=250_000)
    assert a2.feedback_time == a2.time + timedelta(seconds=30)
    # importing again replaces in place: nothing doubles
    assert analytics.import_jsonl(copy, path) == 13
    assert analytics.entries(copy).count() == 13
    assert [e.qa_id for e in copy.get_session("s1")] == ["a1", "a2", "a3", "a4"]
    # and the export of the copy is the same file
    again = tmp_path / "again.jsonl"
    analytics.export_jsonl(copy, again, "raw")
    assert again.read_text(encoding="utf-8") == path.read_text(encoding="utf-8")


def test_raw_export_keeps_session_order(stores: Stores) -> None:
    """More than 10 turns: the diskcache scan meets seq 10 before seq 2; the export must not."""
    long = stores("long")
    for i in range(12):
        long.record("s", f"q{i}", f"a{i}", qa_id=f"t{i}")
    payloads = list(analytics.raw_records(long))
    assert [json.loads(p)["qa_id"] for p in payloads] == [f"t{i}" for i in range(12)]


def test_imported_ratings_reach_positive_memory(stores: Stores, tmp_path: Path) -> None:
    path = tmp_path / "raw.jsonl"
    source = stores("source")
    liked = source.record("s9", "How do I export notes as PDF?", "Use File > Export > PDF.")
    assert source.thumbs("s9", liked.qa_id, up=True)
    analytics.export_jsonl(source, path, "raw")

    target = stores("target")
    memory = PositiveMemoryRetriever(store=target, k=2)
    assert memory.invoke("export PDF") == []  # index built before the import
    analytics.import_jsonl(target, path)
    (doc,) = memory.invoke("export PDF")
    assert doc.metadata["qa_id"] == liked.qa_id


def test_import_refuses_bad_lines_and_writes_nothing(stores: Stores, tmp_path: Path) -> None:
    target = stores("target")
    good = TURNS[0].to_json()
    score_7 = good.replace('"feedback_score":5', '"feedback_score":7')
    cases = {
        "not-json.jsonl": (f"{good}\n{{oops\n", "line 2: not JSON"),
        "chat.jsonl": (
            '{"messages": [{"role": "user", "content": "q"}]}\n',
            "line 1: not a raw entry, missing qa_id, session_id, question, answer (a chat or eval",
        ),
        "score.jsonl": (
            f"{good}\n\n{score_7}\n",
            "line 3: feedback_score must be an int from 1 to 5",
        ),
        "empty-id.jsonl": (
            good.replace('"session_id":"s1"', '"session_id":""'),
            "line 1: session_id",
        ),
        "time.jsonl": (good.replace("2024-05-01T10:00:00Z", "yesterday"), "line 1: time:"),
        "array.jsonl": ("[1, 2]\n", "line 1: not a raw entry (a JSON list)"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        with pytest.raises(
            ImportFormatError, match=message.replace("(", r"\(").replace(")", r"\)")
        ):
            analytics.import_jsonl(target, path)
    assert analytics.entries(target).count() == 0
    assert analytics.import_jsonl(target, io.StringIO(f"\n{good}\n\n")) == 1


def test_import_entries_validates(stores: Stores) -> None:
    target = stores("target")
    bad = TURNS[0].model_copy(update={"feedback_score": 9})
    with pytest.raises(ValueError, match="feedback_score"):
        target.import_entries([TURNS[1], bad])
    with pytest.raises(ValueError, match="batch_size"):
        target.import_entries([], batch_size=0)
    assert target.import_entries([]) == 0
    assert analytics.entries(target).count() == 0


def test_store_errors_are_store_errors(tmp_path: Path) -> None:
    from feedback_plugin import StoreError

    broken = SessionStore(tmp_path / "file-not-dir")
    (tmp_path / "file-not-dir").write_text("x")
    with pytest.raises(StoreError):
        analytics.stats(broken)
    broken.close()
