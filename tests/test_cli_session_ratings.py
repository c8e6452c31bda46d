"""The command line on session ratings and memories that hurt (a diskcache store).

The stores are those of ``tests/test_analytics_session_ratings.py``: the
hand-counted mix of ``tests/test_analytics.py`` with each conversation rated
as a whole (``seed_rated``, see its table), and ``hurt_store``'s memories.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_analytics import seed
from test_analytics_session_ratings import hurt_store, seed_rated

from feedback_plugin import SessionStore
from feedback_plugin.analytics import wilson_interval
from feedback_plugin.cli import main


class Run:
    def __init__(self, capsys: pytest.CaptureFixture[str], location: str) -> None:
        self.capsys = capsys
        self.location = location

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["--store", self.location, *argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Run:
    location = str(tmp_path / "rated")
    with SessionStore(location) as store:
        seed_rated(store)
    return Run(capsys, location)


@pytest.fixture
def hurt(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> tuple[Run, dict[str, str]]:
    location = str(tmp_path / "hurt")
    store, memories = hurt_store(location)
    store.close()
    return Run(capsys, location), memories


def pct(value: float) -> str:
    return f"{value:.1%}"


# -- sessions --session-feedback ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("positive", ["s1", "s3"]),
        ("negative", ["s2", "s5"]),
        ("rated", ["s1", "s2", "s3", "s5"]),
        ("unrated", ["s4", "s6"]),
    ],
)
def test_sessions_session_feedback(run: Run, kind: str, expected: list[str]) -> None:
    rows = run.json("sessions", "--session-feedback", kind)
    assert [r["session_id"] for r in rows] == expected


def test_sessions_show_the_rating(run: Run) -> None:
    code, out, err = run("sessions")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == [
        "LAST", "ACTIVE", "USER", "SESSION", "TURNS", "RATED", "+", "-", "MEAN",
        "RATING", "FIRST", "QUESTION", "RATING", "COMMENT",
    ]  # fmt: skip
    assert lines[2].split() == [
        "2024-05-01", "10:03", "-", "s1", "4", "3", "2", "1", "3.7", "5", "+",
        "question", "a1?", "helpful",
    ]  # fmt: skip
    assert lines[3].split()[9:11] == ["2", "-"]  # s2: a 2 is negative
    assert lines[5].split()[2:10] == ["alice", "s4", "2", "1", "0", "0", "3.0", "-"]
    assert lines[5].endswith("meh")  # a comment without a score
    rows = {r["session_id"]: r for r in run.json("sessions")}
    assert (rows["s1"]["session_score"], rows["s1"]["session_text"]) == (5, "helpful")
    assert (rows["s6"]["session_score"], rows["s6"]["session_text"]) == (None, None)


def test_sessions_session_feedback_with_other_filters(run: Run) -> None:
    code, out, _ = run("sessions", "--session-feedback", "positive", "--feedback", "negative")
    assert code == 0
    lines = out.splitlines()
    assert "MATCH" in lines[0].split()
    assert lines[2].split()[3:11] == ["s1", "4", "3", "2", "1", "3.7", "1", "5"]
    assert lines[-1] == "1 session"
    code, out, err = run("sessions", "--session-feedback", "negative", "--user", "alice")
    assert (code, out, err) == (0, "", "no sessions match\n")


@pytest.mark.parametrize("command", ["sessions", "entries", "stats", "export"])
def test_a_bad_session_feedback_exits_2(run: Run, command: str) -> None:
    extra = ["--format", "raw"] if command == "export" else []
    code, out, err = run(command, *extra, "--session-feedback", "great")
    assert (code, out) == (2, "")
    assert f"feedback-plugin {command}: error: argument --session-feedback: invalid choice: " in err
    assert "'great' (choose from 'positive', 'negative', 'rated', 'unrated')" in err
    assert "Traceback" not in err


def test_entries_and_export_by_session_rating(run: Run, tmp_path: Path) -> None:
    found = run.json("entries", "--session-feedback", "negative")
    assert sorted(e["qa_id"] for e in found) == ["b1", "b2", "e1"]
    target = tmp_path / "neg.jsonl"
    code, out, _ = run(
        "export", "--format", "raw", "--session-feedback", "negative", "-o", str(target)
    )
    assert (code, out) == (0, f"wrote 3 raw records to {target}\n")
    first = json.loads(target.read_text(encoding="utf-8").splitlines()[0])
    assert first["session_feedback"]["feedback_score"] == 2  # the rating travels with b1


# -- stats: the session-level table ---------------------------------------------------------


def test_stats_prints_the_session_level_figures(run: Run) -> None:
    code, out, err = run("stats", "--by", "prompt_version")
    assert (code, err) == (0, "")
    turns, sessions = out.split("\n\n")
    # the turn-level table is as before
    assert turns.splitlines()[2].split()[:5] == ["v1", "6", "4", "3.50", "50.0%"]
    lines = sessions.splitlines()
    assert lines[0] == "session ratings (whole conversations rated):"
    assert lines[1].split() == ["PROMPT_VERSION", "SESSIONS", "RATED", "SESSIONS", "POSITIVE",
                                "95%", "CI"]  # fmt: skip
    v1_low, v1_high = wilson_interval(1, 2)
    v2_low, v2_high = wilson_interval(1, 1)
    none_low, none_high = wilson_interval(0, 1)
    assert lines[3].split() == ["v1", "2", "2", "50.0%", pct(v1_low), "-", pct(v1_high)]
    assert lines[3].split()[4:] == ["9.5%", "-", "90.5%"]  # by hand: 0.0945 .. 0.9055
    assert lines[4].split() == ["v2", "2", "1", "100.0%", pct(v2_low), "-", pct(v2_high)]
    assert lines[5].split() == ["v3", "1", "0", "-", "-"]
    assert lines[6].split() == ["(none)", "1", "1", "0.0%", pct(none_low), "-", pct(none_high)]
    assert lines[7] == (
        "positive: score >= 4 among rated sessions; "
        "a session counts in every group it has a turn in"
    )
    data = run.json("stats", "--by", "prompt_version")
    v1 = data["groups"][0]
    assert (v1["rated_sessions"], v1["positive_sessions"], v1["session_positive_rate"]) == (
        2,
        1,
        0.5,
    )
    assert (v1["session_ci_low"], v1["session_ci_high"]) == (
        pytest.approx(v1_low, abs=1e-12),
        pytest.approx(v1_high, abs=1e-12),
    )


def test_stats_by_session_rating(run: Run) -> None:
    data = run.json("stats", "--by", "prompt_version", "--session-feedback", "positive")
    assert [(g["group"], g["turns"], g["rated_sessions"]) for g in data["groups"]] == [
        ("v1", 4, 1),
        ("v2", 3, 1),
    ]


def test_stats_without_session_ratings_prints_one_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    location = str(tmp_path / "plain")
    with SessionStore(location) as store:
        seed(store)
    assert main(["--store", location, "stats", "--by", "prompt_version"]) == 0
    out = capsys.readouterr().out
    assert "session ratings" not in out and "\n\n" not in out


# -- memories that hurt ------------------------------------------------------------------------


def test_entries_hurting(hurt: tuple[Run, dict[str, str]]) -> None:
    run, m = hurt
    code, out, err = run("entries", "--hurting")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == [
        "USER",
        "SESSION",
        "QA_ID",
        "SCORE",
        "FED",
        "-",
        "FED",
        "+",
        "QUESTION",
    ]
    assert lines[2].split() == ["ann", "m-worst", m["worst"], "5", "+", "3", "0", "liked", "worst?"]
    assert lines[3].split() == ["bob", "m-bobs", m["bobs"], "5", "+", "2", "0", "liked", "bobs?"]
    assert lines[4].split() == ["ann", "m-mixed", m["mixed"], "5", "+", "2", "1", "liked", "mixed?"]
    assert lines[5] == "3 memories that hurt"
    assert lines[6].startswith("FED -/+: answers it fed, rated negative / positive")
    found = run.json("entries", "--hurting", "--user", "ann")
    assert [e["qa_id"] for e in found] == [m["worst"], m["mixed"]]
    assert sorted(found[1]["fed_outcomes"].values()) == ["negative", "negative", "positive"]
    code, out, _ = run("entries", "--hurting", "--limit", "1")
    assert out.splitlines()[-2] == "1 memory that hurts (the first 1; --limit N for more)"
    code, out, err = run("entries", "--hurting", "--user", "carol")
    assert (code, out, err) == (0, "", "no memories that hurt match\n")
    # the other commands take it as a filter
    rows = run.json("sessions", "--hurting")
    assert [r["session_id"] for r in rows] == ["m-worst", "m-mixed", "m-bobs"]
    (overall,) = run.json("stats", "--hurting")["groups"]
    assert overall["turns"] == 3


def test_no_memory_hurts(run: Run) -> None:
    code, out, err = run("entries", "--hurting")
    assert (code, out, err) == (0, "", "no memories hurt\n")


def test_show_and_entries_print_memory(hurt: tuple[Run, dict[str, str]]) -> None:
    run, m = hurt
    code, out, _ = run("show", "a-worst-0", "--user", "ann")
    assert code == 0
    assert f"  memory: 1 remembered turn: {m['worst']}\n" in out
    code, out, _ = run("show", "m-worst", "--user", "ann")
    assert (
        "  fed: 3 answers rated negative, 0 positive; hurts: out of memory until rated again" in out
    )
    code, out, _ = run("show", "m-even", "--user", "ann")
    assert "  fed: 1 answer rated negative, 1 positive\n" in out
    [turn] = run.json("show", "a-worst-0", "--user", "ann")
    assert turn["memory_ids"] == [m["worst"]]
    assert turn["memory_sessions"] == {m["worst"]: "m-worst"}
    [entry] = run.json("entries", "--session", "a-worst-0", "--user", "ann")
    assert entry["memory_ids"] == [m["worst"]]


def test_show_prints_the_session_rating(run: Run) -> None:
    code, out, _ = run("show", "s1")
    assert code == 0
    assert out.startswith("session s1: 4 turns\nsession rating: 5 +  comment: helpful\n")
    code, out, _ = run("show", "s4", "--user", "alice", "--last", "1")  # the rating is on d1
    assert out.startswith("session s4 (user alice): 1 turn\nsession rating: -  comment: meh\n")
    code, out, _ = run("show", "s6", "--user", "bob")
    assert "session rating" not in out
    [d1, _d2] = run.json("show", "s4", "--user", "alice")
    assert d1["session_feedback"]["feedback_text"] == "meh"
