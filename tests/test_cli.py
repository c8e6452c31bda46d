"""The ``feedback-plugin`` command, run in-process (``main([...])``) on diskcache and Redis.

The store is the hand-counted mix of ``tests/test_analytics.py`` (see its
table); one test runs the installed console script in a subprocess.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_analytics import TURNS, Stores, require_redis, seed

from feedback_plugin import SessionStore
from feedback_plugin.cli import main


@pytest.fixture(params=["disk", "redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "redis":
        require_redis()
    factory = Stores(str(request.param), tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def store(stores: Stores) -> SessionStore:
    return seed(stores())


class Run:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(capsys)


# -- help and bad arguments ------------------------------------------------------------------

COMMANDS = ["sessions", "entries", "show", "stats", "export", "import", "serve"]


def test_help(run: Run) -> None:
    code, out, _ = run("--help")
    assert code == 0
    assert out.startswith("usage: feedback-plugin")
    for name in COMMANDS:
        assert name in out
    for name in COMMANDS:
        code, out, _ = run(name, "--help")
        assert code == 0 and out.startswith(f"usage: feedback-plugin {name}")


def test_installed_console_script() -> None:
    script = Path(sys.executable).with_name("feedback-plugin")
    assert script.exists(), "reinstall the package: pip install -e '.[dev]'"
    proc = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: feedback-plugin" in proc.stdout and "stats" in proc.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["stats", "--min-score", "9"], "'9' is not a score from 1 to 5"),
        (["stats", "--min-score", "4", "--max-score", "2"], "--min-score 4 is above --max-score 2"),
        (["sessions", "--since", "last tuesday"], "'last tuesday' is not a time"),
        (["sessions", "--meta", "prompt_version"], "'prompt_version' is not KEY=VALUE"),
        (["sessions", "--feedback", "great"], "invalid choice: 'great'"),
        (
            ["stats", "--session-feedback", "up"],
            "argument --session-feedback: invalid choice: 'up'",
        ),
        (["entries", "--hurting", "yes"], "unrecognized arguments: yes"),
        (["sessions", "--user", "a", "--no-user"], "not allowed with argument"),
        (["sessions", "--limit", "-1"], "'-1' is not a whole number"),
        (["export"], "the following arguments are required: --format"),
        (["export", "--format", "csv"], "invalid choice: 'csv'"),
        (["show"], "the following arguments are required: SESSION"),
        (["show", "s1", "--last", "0"], "'0' is not a whole number >= 1"),
        (["serve", "--port", "99999"], "'99999' is not a port"),
        (["--namespace", "", "stats"], "--namespace must not be empty"),
        (["--store", "ftp://example/x", "stats"], "unsupported store location"),
    ],
)
def test_bad_arguments_exit_2(run: Run, tmp_path: Path, argv: list[str], message: str) -> None:
    code, out, err = run(*argv)
    assert code == 2
    assert out == ""
    assert message in err
    assert "Traceback" not in err


def test_system_needs_chat_format(run: Run, store: SessionStore, stores: Stores) -> None:
    code, _, err = run(*stores.args(), "export", "--format", "raw", "--system", "x")
    assert code == 2 and err == "feedback-plugin: error: --system goes with --format chat\n"


# -- store and file errors ---------------------------------------------------------------------


def test_no_store_there(run: Run, tmp_path: Path) -> None:
    code, out, err = run("--store", str(tmp_path / "nowhere"), "sessions")
    assert (code, out) == (1, "")
    assert err == f"feedback-plugin: error: no store at {tmp_path / 'nowhere'}\n"
    assert not (tmp_path / "nowhere").exists()  # reading never creates a store
    code, _, err = run("stats")  # the default store ($FEEDBACK_PLUGIN_DIR) is empty too
    assert code == 1 and "(give --store DIR, or set FEEDBACK_PLUGIN_DIR)" in err


def test_redis_down_is_one_line(run: Run) -> None:
    code, out, err = run("--store", "redis://127.0.0.1:1/0", "stats")
    assert (code, out) == (1, "")
    assert err.startswith("feedback-plugin: error: scan failed on redis://127.0.0.1:1/0: ")
    assert err.count("\n") == 1


def test_import_errors(run: Run, tmp_path: Path) -> None:
    target = ["--store", str(tmp_path / "target")]
    code, _, err = run(*target, "import", str(tmp_path / "missing.jsonl"))
    assert code == 1 and "No such file or directory" in err and "missing.jsonl" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(TURNS[0].to_json() + "\nnot json\n", encoding="utf-8")
    code, _, err = run(*target, "import", str(bad))
    assert code == 1
    assert err == f"feedback-plugin: error: {bad}, line 2: not JSON (Expecting value)\n"
    code, _, err = run(*target, "sessions")
    assert code == 1 and "no store at" in err  # the good first line was not written either


def _line(**fields: Any) -> str:
    entry = {"qa_id": "q1", "session_id": "s1", "question": "Q?", "answer": "A."}
    entry["time"] = "2024-05-01T10:00:00Z"
    entry.update(fields)
    return json.dumps(entry, ensure_ascii=False)


@pytest.mark.parametrize("score", ['"5"', "5.0", "true", "false", "0", "6", "null"])
def test_import_takes_only_the_scores_the_store_takes(run: Run, tmp_path: Path, score: str) -> None:
    bad = tmp_path / "scores.jsonl"
    good = _line(qa_id="ok", feedback_score=4)
    bad.write_text(f'{good}\n{_line()[:-1]}, "feedback_score": {score}}}\n', encoding="utf-8")
    code, out, err = run("--store", str(tmp_path / "target"), "import", str(bad))
    if score == "null":  # no score is a valid unrated turn
        assert (code, out) == (0, f"imported 2 turns into {tmp_path / 'target'}\n")
        return
    assert (code, out) == (1, "")
    assert err.startswith(f"feedback-plugin: error: {bad}, line 2: feedback_score must be an int")
    assert not (tmp_path / "target").exists()  # the file is checked whole: nothing written


def _cli(*argv: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """Run the installed ``feedback-plugin`` command; return its exit code, stdout, stderr."""
    script = Path(sys.executable).with_name("feedback-plugin")
    proc = subprocess.run(
        [str(script), *argv], input=stdin, capture_output=True, timeout=120, check=False
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


BAD_LINES = {
    "deep nesting": "[" * 100_000 + "]" * 100_000,
    "deep nesting in a field": _line(metadata={"x": "DEEP"}).replace(
        '"DEEP"', "[" * 100_000 + "]" * 100_000
    ),
    "year 0 after the time zone": _line(time="0001-01-01T00:00:00+01:00"),
    "year 10000 after the time zone": _line(time="9999-12-31T23:59:59-01:00"),
    "year 0 feedback time": _line(feedback_time="0001-01-01T00:30:00+01:00"),
}


@pytest.mark.parametrize("what", list(BAD_LINES))
def test_import_bad_line_is_one_line_error_never_a_traceback(tmp_path: Path, what: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_line(qa_id="ok") + "\n" + BAD_LINES[what] + "\n", encoding="utf-8")
    code, out, err = _cli("--store", str(tmp_path / "target"), "import", str(bad))
    assert (code, out) == (1, ""), err
    assert "Traceback" not in err
    assert err.startswith(f"feedback-plugin: error: {bad}, line 2: ")
    assert err.count("\n") == 1
    assert not (tmp_path / "target").exists()


def test_import_non_utf8_file_names_the_line(run: Run, tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(
        (_line(qa_id="ok") + "\n" + _line(question="Café?") + "\n").encode("latin-1")
    )
    code, out, err = run("--store", str(tmp_path / "target"), "import", str(latin1))
    assert (code, out) == (1, "")  # a file error, not bad arguments (2)
    assert err.startswith(f"feedback-plugin: error: {latin1}, line 2: not UTF-8 text")
    assert not (tmp_path / "target").exists()
    code, _, err = _cli(
        "--store", str(tmp_path / "target"), "import", "-", stdin=latin1.read_bytes()
    )
    assert code == 1
    assert err.startswith("feedback-plugin: error: <stdin>, line 2: not UTF-8 text")


def test_import_counts_a_repeated_qa_id_once_and_the_later_line_wins(
    run: Run, stores: Stores, tmp_path: Path
) -> None:
    raw = tmp_path / "dup.jsonl"
    lines = [
        _line(qa_id="a", question="first a"),
        _line(qa_id="b", question="only b"),
        _line(qa_id="a", question="second a", feedback_score=5),
        _line(qa_id="a", session_id="s2", question="a in another session"),
        _line(qa_id="a", user_id="alice", question="alice's a"),
    ]
    raw.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    result = run.json(*stores.args("dup"), "import", str(raw))
    assert result["imported"] == 4  # (None, s1, a), (None, s1, b), (None, s2, a), (alice, s1, a)
    stores("dup")
    turns = run.json(*stores.args("dup"), "show", "s1")
    assert [(t["qa_id"], t["question"], t["feedback_score"]) for t in turns] == [
        ("a", "second a", 5),  # the later line's fields, at the first line's place
        ("b", "only b", None),
    ]
    again = run.json(*stores.args("dup"), "import", str(raw))  # importing twice changes nothing
    assert again["imported"] == 4
    assert run.json(*stores.args("dup"), "show", "s1") == turns


# -- session id prefixes -------------------------------------------------------------------


def _prefix_store(location: str) -> None:
    s = SessionStore(location)
    s.record("3f2a9c1d-7b9e-4c1a-9d7e-1f2a3b4c5d6e", "How do I reset my password?", "Settings.")
    s.record("3f2b0000-0000-4000-8000-000000000000", "Where is my invoice?", "Billing.")
    s.record("s1", "q in s1", "a")
    s.record("s10", "q in s10", "a")
    s.record("9c9c9c9c-alice", "alice's question", "a", user="alice")
    s.close()


def test_show_takes_a_unique_session_id_prefix(run: Run, tmp_path: Path) -> None:
    location = str(tmp_path / "prefix")
    _prefix_store(location)
    code, out, err = run("--store", location, "show", "3f2a9c1d")
    assert code == 0, err
    assert out.startswith("session 3f2a9c1d-7b9e-4c1a-9d7e-1f2a3b4c5d6e: 1 turn\n")
    assert "How do I reset my password?" in out
    turns = run.json("--store", location, "show", "9c9c9c9c", "--user", "alice")
    assert [t["session_id"] for t in turns] == ["9c9c9c9c-alice"]
    assert [t["session_id"] for t in run.json("--store", location, "show", "s1")] == ["s1"]


def test_an_ambiguous_session_prefix_is_an_error(run: Run, tmp_path: Path) -> None:
    location = str(tmp_path / "prefix")
    _prefix_store(location)
    code, out, err = run("--store", location, "show", "3f2")
    assert (code, out) == (1, "")
    assert err == (
        "feedback-plugin: error: session '3f2' is ambiguous: it begins 2 session ids "
        "(give more characters)\n"
    )
    code, _, err = run("--store", location, "show", "zzz")
    assert code == 1 and "no turns in session 'zzz'" in err


def test_session_filter_takes_a_unique_prefix(run: Run, tmp_path: Path) -> None:
    location = str(tmp_path / "prefix")
    _prefix_store(location)
    rows = run.json("--store", location, "entries", "--session", "3f2a")
    assert [r["question"] for r in rows] == ["How do I reset my password?"]
    rows = run.json("--store", location, "sessions", "--session", "9c9c", "--user", "alice")
    assert [r["session_id"] for r in rows] == ["9c9c9c9c-alice"]
    code, _, err = run("--store", location, "stats", "--session", "3f2")
    assert code == 1 and "session '3f2' is ambiguous: it begins 2 session ids" in err
    assert run.json("--store", location, "entries", "--session", "nothing-like-it") == []


def test_session_prefix_from_a_subprocess(tmp_path: Path) -> None:
    """What a newcomer types: the 8 characters the demo page shows, on the real command."""
    location = str(tmp_path / "prefix")
    _prefix_store(location)
    code, out, err = _cli("--store", location, "show", "3f2a9c1d")
    assert code == 0, err
    assert "How do I reset my password?" in out


# -- reading ------------------------------------------------------------------------------------


def test_sessions_table(run: Run, store: SessionStore, stores: Stores) -> None:
    code, out, err = run(*stores.args(), "sessions")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == [
        "LAST", "ACTIVE", "USER", "SESSION", "TURNS", "RATED", "+", "-", "MEAN",
        "RATING", "FIRST", "QUESTION",
    ]  # fmt: skip
    assert lines[2].split() == [
        "2024-05-01", "10:03", "-", "s1", "4", "3", "2", "1", "3.7", "-", "question", "a1?",
    ]  # fmt: skip
    assert lines[4].split()[2:10] == ["alice", "s3", "3", "3", "3", "0", "4.7", "-"]
    assert lines[-1] == "6 sessions"


def test_sessions_filters(run: Run, store: SessionStore, stores: Stores) -> None:
    def listed(*filters: str) -> list[tuple[str | None, str, int]]:
        rows = run.json(*stores.args(), "sessions", *filters)
        return [(r["user_id"], r["session_id"], r["matching"]) for r in rows]

    assert listed("--feedback", "negative") == [(None, "s1", 1), (None, "s5", 1)]
    assert listed("--user", "alice") == [("alice", "s3", 3), ("alice", "s4", 2)]
    assert listed("--no-user", "--feedback", "unrated") == [(None, "s1", 1), (None, "s2", 1)]
    assert listed("--meta", "prompt_version=v1", "--has-text") == [(None, "s1", 2), (None, "s2", 1)]
    assert listed("--meta", "temperature=0.2") == [(None, "s1", 1)]
    assert listed("--since", "2024-05-04", "--until", "2024-05-06T00:00Z") == [
        ("alice", "s4", 2),
        (None, "s5", 1),
    ]
    assert listed("--min-score", "5") == [(None, "s1", 1), ("alice", "s3", 2)]
    assert listed("--limit", "2") == [(None, "s5", 1), ("bob", "s6", 1)]
    assert listed("--since", "1d") == []  # an age: the turns are from 2024
    code, out, err = run(*stores.args(), "sessions", "--user", "nobody")
    assert (code, out, err) == (0, "", "no sessions match\n")
    rows = run.json(*stores.args(), "sessions", "--session", "s1")
    assert rows[0]["turns"] == 4 and rows[0]["mean_score"] == pytest.approx(11 / 3)
    assert rows[0]["first_time"] == "2024-05-01T10:00:00+00:00"


def test_entries(run: Run, store: SessionStore, stores: Stores) -> None:
    found = run.json(*stores.args(), "entries", "--feedback", "positive")
    assert sorted(e["qa_id"] for e in found) == ["a1", "a2", "c1", "c2", "c3"]
    code, out, _ = run(*stores.args(), "entries", "--feedback", "negative", "--limit", "1")
    assert code == 0
    assert out.splitlines()[-1] == "1 turn (the first 1; --limit N for more)"


def test_show(run: Run, store: SessionStore, stores: Stores) -> None:
    code, out, _ = run(*stores.args(), "show", "s1")
    assert code == 0
    assert out.startswith("session s1: 4 turns\n")
    assert out.index("question a1?") < out.index("question a2?") < out.index("question a4?")
    assert "[3] 2024-05-01 10:02:00  qa_id a3  score 2 -" in out
    assert "  comment: wrong" in out and "  context: 1 document\n" in out
    code, out, err = run(*stores.args(), "show", "s3")
    assert (code, out) == (1, "")
    assert err == (
        "feedback-plugin: error: no turns in session 's3' for no user; "
        "it has turns for: alice (use --user)\n"
    )
    turns = run.json(*stores.args(), "show", "s3", "--user", "alice", "--last", "2")
    assert [t["qa_id"] for t in turns] == ["c2", "c3"]
    assert turns[1]["correction"] == "Better." and turns[1]["time"] == "2024-05-03T10:02:00Z"
    code, out, _ = run(*stores.args(), "show", "s3", "--user", "alice")
    assert "  correction: Better." in out and "score 4 +" in out


def test_stats(run: Run, store: SessionStore, stores: Stores) -> None:
    code, out, _ = run(*stores.args(), "stats", "--by", "prompt_version")
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    assert rows[0][:4] == ["PROMPT_VERSION", "TURNS", "RATED", "MEAN"]
    assert rows[2] == ["v1", "6", "4", "3.50", "50.0%", "15.0%", "-", "85.0%", "2", "3.0", "50.0%"]
    assert rows[3] == ["v2", "5", "4", "4.25", "75.0%", "30.1%", "-", "95.4%", "2", "2.5", "0.0%"]
    assert rows[4] == ["v3", "1", "0", "-", "-", "-", "1", "1.0", "0.0%"]
    assert rows[5] == [
        "(none)",
        "1",
        "1",
        "1.00",
        "0.0%",
        "0.0%",
        "-",
        "79.3%",
        "1",
        "1.0",
        "100.0%",
    ]
    data = run.json(*stores.args(), "stats", "--by", "prompt_version", "--user", "alice")
    assert data["by"] == "prompt_version"
    (v2,) = data["groups"]
    assert (v2["group"], v2["turns"], v2["positive"], v2["rated"]) == ("v2", 5, 3, 4)
    assert v2["ci_low"] == pytest.approx(0.3006, abs=1e-4)
    (overall,) = run.json(*stores.args(), "stats")["groups"]
    assert (overall["turns"], overall["rated"], overall["positive"]) == (13, 9, 5)


# -- export and import -----------------------------------------------------------------------------


def test_export_formats(run: Run, store: SessionStore, stores: Stores, tmp_path: Path) -> None:
    chat = tmp_path / "chat.jsonl"
    code, out, _ = run(*stores.args(), "export", "--format", "chat", "-o", str(chat))
    assert (code, out) == (0, f"wrote 6 chat records to {chat}\n")
    records = [json.loads(line) for line in chat.read_text(encoding="utf-8").splitlines()]
    answers = sorted(r["messages"][1]["content"] for r in records)
    assert answers == ["Better.", "answer a1.", "answer a2.", "answer c1.", "answer c2.", "fixed"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    code, out, err = run(*stores.args(), "export", "--format", "raw", "--user", "alice")
    assert code == 0 and err == "exported 5 raw records\n"
    assert [json.loads(line)["qa_id"] for line in out.splitlines()] == [
        "c1",
        "c2",
        "c3",
        "d1",
        "d2",
    ]

    evals = tmp_path / "eval.jsonl"
    summary = run.json(
        *stores.args(),
        "export",
        "--format",
        "eval",
        "-o",
        str(evals),
        "--meta",
        "prompt_version=v2",
    )
    assert summary == {"format": "eval", "file": str(evals), "written": 3}
    by_id = {
        json.loads(x)["metadata"]["qa_id"]: json.loads(x) for x in evals.read_text().splitlines()
    }
    assert by_id["c3"]["outputs"] == {"answer": "Better."}

    code, out, _ = run(
        *stores.args(), "export", "--format", "chat", "--system", "Be brief.", "--session", "s3"
    )
    first = json.loads(out.splitlines()[0])
    assert first["messages"][0] == {"role": "system", "content": "Be brief."}


def test_export_to_missing_directory(
    run: Run, store: SessionStore, stores: Stores, tmp_path: Path
) -> None:
    target = tmp_path / "no" / "such" / "dir.jsonl"
    code, _, err = run(*stores.args(), "export", "--format", "raw", "-o", str(target))
    assert code == 1 and "No such file or directory" in err


def test_import_round_trip(run: Run, store: SessionStore, stores: Stores, tmp_path: Path) -> None:
    raw = tmp_path / "raw.jsonl"
    assert run(*stores.args(), "export", "--format", "raw", "-o", str(raw))[0] == 0
    copy_args = stores.args("copy")
    code, out, _ = run(*copy_args, "import", str(raw))
    location = copy_args[1]
    assert (code, out) == (0, f"imported 13 turns into {location}\n")
    stores("copy")  # registered for cleanup
    again = tmp_path / "again.jsonl"
    assert run(*copy_args, "export", "--format", "raw", "-o", str(again))[0] == 0
    assert again.read_text(encoding="utf-8") == raw.read_text(encoding="utf-8")
    assert run.json(*copy_args, "stats", "--by", "prompt_version") == run.json(
        *stores.args(), "stats", "--by", "prompt_version"
    )


def test_import_from_stdin(run: Run, stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "".join(t.to_json() + "\n" for t in TURNS[:3])
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    result = run.json(*stores.args("piped"), "import", "-")
    assert result["imported"] == 3
    stores("piped")
    assert [t["qa_id"] for t in run.json(*stores.args("piped"), "show", "s1")] == ["a1", "a2", "a3"]


def test_default_store_from_environment(run: Run, tmp_path: Path) -> None:
    raw = tmp_path / "one.jsonl"
    raw.write_text(TURNS[6].to_json() + "\n", encoding="utf-8")
    assert run("import", str(raw))[0] == 0  # into $FEEDBACK_PLUGIN_DIR (tests/conftest.py)
    assert [r["session_id"] for r in run.json("sessions")] == ["s3"]


# -- output safety and options ---------------------------------------------------------


def test_terminal_escapes_are_not_printed(run: Run, tmp_path: Path) -> None:
    location = str(tmp_path / "evil")
    evil = SessionStore(location)
    evil.record("s\x1b[2J", "\x1b]0;pwned\x07What?\nNext", "ok\r\u202e", user="\ud800")
    evil.close()
    for argv in (["sessions"], ["entries"], ["show", "s\x1b[2J", "--user", "\ud800"]):
        code, out, err = run("--store", location, *argv)
        assert code == 0, err
        assert "\x1b" not in out and "\x07" not in out and "\r" not in out and "\u202e" not in out
    rows = run.json("--store", location, "sessions")
    assert rows[0]["session_id"] == "s\x1b[2J" and rows[0]["user_id"] == "\ud800"


def test_global_options_after_the_command(run: Run, store: SessionStore, stores: Stores) -> None:
    code, out, _ = run("sessions", *stores.args(), "--json")
    assert code == 0 and len(json.loads(out)) == 6


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What ``serve`` does, one dict a run: ``create_demo_app``'s arguments and, under
    ``"run"``, ``uvicorn.run``'s (replaced: no server starts)."""
    pytest.importorskip("uvicorn")
    import uvicorn

    from feedback_plugin.integrations.demo import app as demo_app

    for name in ("HOST", "PORT", "ALLOWED_HOSTS", "MAX_BODY_BYTES", "RATE_LIMIT", "ALLOW_OPEN"):
        monkeypatch.delenv(f"FEEDBACK_PLUGIN_{name}", raising=False)
    for name in ("API_KEYS", "API_KEYS_FILE", "CHAT_MODEL"):
        monkeypatch.delenv(f"FEEDBACK_PLUGIN_{name}", raising=False)
    calls: list[dict[str, Any]] = []
    real = demo_app.create_demo_app

    def create_demo_app(store: SessionStore, **kw: Any) -> Any:
        calls.append({"store": store.location, **kw})
        return real(store, **kw)

    monkeypatch.setattr(demo_app, "create_demo_app", create_demo_app)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls[-1].update(run=kw))
    return calls


def test_serve_runs_the_demo_app(run: Run, served: list[dict[str, Any]], tmp_path: Path) -> None:
    code, out, err = run("serve")
    assert code == 0, err
    assert served[0]["run"] == {"host": "127.0.0.1", "port": 8000, "log_level": "warning"}
    assert "http://127.0.0.1:8000/" in out
    store = str(tmp_path / "srv")
    code, out, err = run("--store", store, "serve", "--host", "::1", "--port", "9001")
    assert code == 0, err
    assert served[1]["store"] == store
    assert (served[1]["run"]["host"], served[1]["run"]["port"]) == ("::1", 9001)
    assert f"http://[::1]:9001/  (store: {store})" in out
    code, _, err = run("--namespace", "x", "serve")
    assert code == 2 and "serve does not take --namespace" in err
    assert len(served) == 2


def test_serve_passes_the_hardening_options(
    run: Run, served: list[dict[str, Any]], tmp_path: Path
) -> None:
    """Hosts, body limit, rate limit and open mode reach the app."""
    pytest.importorskip("limits")
    from feedback_plugin.integrations.guards import RateLimit

    code, _, err = run(
        "--store",
        str(tmp_path / "s"),
        "serve",
        "--host",
        "0.0.0.0",
        "--allowed-hosts",
        "chat.example.com,*.example.org",
        "--max-body-bytes",
        "4096",
        "--rate-limit",
        "30/minute",
        "--allow-open",
    )
    assert code == 0, err
    [call] = served
    assert call["allowed_hosts"] == ["chat.example.com", "*.example.org"]
    assert call["max_body_bytes"] == 4096 and call["allow_open"] is True
    assert isinstance(call["rate_limit"], RateLimit)
    assert call["run"]["host"] == "0.0.0.0"
    # a body limit that is not a positive number is a bad argument, before any server
    code, _, err = run("serve", "--max-body-bytes", "0")
    assert code == 2 and "'0' is not a whole number >= 1" in err
    # without keys, a non-loopback host needs --allow-open
    code, _, err = run("--store", str(tmp_path / "s"), "serve", "--host", "0.0.0.0")
    assert code == 2 and "--allow-open" in err and "FEEDBACK_PLUGIN_API_KEYS" in err
    assert len(served) == 1


def test_serve_options_default_to_the_environment(
    run: Run, served: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_PLUGIN_HOST", "::1")
    monkeypatch.setenv("FEEDBACK_PLUGIN_PORT", "9003")
    monkeypatch.setenv("FEEDBACK_PLUGIN_ALLOWED_HOSTS", "chat.example.com")
    monkeypatch.setenv("FEEDBACK_PLUGIN_MAX_BODY_BYTES", "100")
    code, _, err = run("--store", str(tmp_path / "s"), "serve")
    assert code == 0, err
    [call] = served
    assert (call["run"]["host"], call["run"]["port"]) == ("::1", 9003)
    assert call["allowed_hosts"] == ["chat.example.com"] and call["max_body_bytes"] == 100
    assert call["rate_limit"] is None and call["allow_open"] is True  # a loopback host
    code, _, err = run("serve", "--port", "9004")  # an option wins over its variable
    assert code == 0 and served[1]["run"]["port"] == 9004
    monkeypatch.setenv("FEEDBACK_PLUGIN_PORT", "99999")
    code, _, err = run("serve")
    assert code == 2 and "FEEDBACK_PLUGIN_PORT" in err and "is not a port" in err
    assert len(served) == 2


def test_the_old_webapp_module_is_serve(run: Run, served: list[dict[str, Any]]) -> None:
    """``python -m feedback_plugin.integrations.webapp`` runs ``serve``: one parser."""
    from feedback_plugin.integrations import webapp

    assert webapp.main(["--port", "9005"]) == 0
    assert served[0]["run"]["port"] == 9005
    assert webapp.main(["--port", "99999"]) == 2


def test_serve_options_take_effect(
    run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The app ``serve`` starts answers the allowed hosts only and enforces the body limit."""
    pytest.importorskip("uvicorn")
    import uvicorn
    from fastapi.testclient import TestClient

    for name in ("ALLOWED_HOSTS", "MAX_BODY_BYTES", "RATE_LIMIT", "ALLOW_OPEN", "API_KEYS"):
        monkeypatch.delenv(f"FEEDBACK_PLUGIN_{name}", raising=False)
    monkeypatch.delenv("FEEDBACK_PLUGIN_API_KEYS_FILE", raising=False)
    monkeypatch.delenv("FEEDBACK_PLUGIN_CHAT_MODEL", raising=False)
    started: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append((app, kw)))
    code, _, err = run(
        "--store",
        str(tmp_path / "store"),
        "serve",
        "--port",
        "9002",
        "--allowed-hosts",
        "chat.example.com",
        "--max-body-bytes",
        "200",
        "--allow-open",
    )
    assert code == 0, err
    [(app, options)] = started
    assert options["port"] == 9002
    client = TestClient(app, base_url="http://chat.example.com")
    assert client.get("/api/sessions").status_code == 200
    other = TestClient(app, base_url="http://evil.example")
    assert other.get("/api/sessions").status_code == 400
    big = {"session_id": "s1", "message": "x" * 500}
    assert client.post("/api/chat", json=big).status_code == 413


def test_serve_without_the_web_extra(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "feedback_plugin.integrations.demo.app", None)
    code, out, err = run("serve")
    assert (code, out) == (1, "")
    assert err.startswith("feedback-plugin: error: the demo server needs the web extra")
    assert err.rstrip().endswith("pip install 'feedback-plugin[web]'")


def test_parser_choices_agree_with_analytics() -> None:
    """The parser spells the choices itself (so --help needs no analytics import)."""
    from feedback_plugin import analytics, cli

    assert cli.FEEDBACK_KINDS == analytics.FEEDBACK_KINDS
    assert cli.EXPORT_FORMATS == analytics.EXPORT_FORMATS


def test_lone_surrogates_are_printed_escaped(run: Run, tmp_path: Path) -> None:
    """Text UTF-8 cannot carry is stored as given; the CLI shows it as an escape, exactly."""
    location = str(tmp_path / "surrogates")
    s = SessionStore(location)
    turn = s.record("s\ud800", "half a pair: \udc00?", "ok")
    assert s.add_feedback("s\ud800", turn.qa_id, feedback_text="\ud83d", feedback_score=4)
    s.close()
    code, out, err = run("--store", location, "show", "s\ud800")
    assert code == 0, err
    assert "session s\\ud800: 1 turn" in out
    assert "Q: half a pair: \\udc00?" in out and "comment: \\ud83d" in out
    code, out, _ = run("--store", location, "sessions")
    assert code == 0 and "s\\ud800" in out
    [entry] = run.json("--store", location, "show", "s\ud800")
    assert entry["question"] == "half a pair: \udc00?"  # JSON carries it exactly
