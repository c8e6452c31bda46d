"""``examples/langgraph_agent.py``, run as a user runs it: a subprocess, offline.

One run rates answers through ``--script``; a second run, in a new process
and a new session, types through piped standard input. Checked in the store
and in what the example prints: every agent turn recorded once as question
and final answer (with the article its retriever tool found), the qa_id the
``custom`` stream announced is the recorded turn's, ratings stored, a liked
answer shown to the model in a later turn (also in the later process), a
disliked one never, and the toolkit rating the thread's previous turn.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from feedback_plugin import SessionStore

pytest.importorskip("langchain.agents")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "langgraph_agent.py"
PASSWORD_ARTICLE = "Resetting your password. To reset your Acme Notes password"


def _run(store: Path, *args: str, stdin: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_PLUGIN_")}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--store", str(store), "--user", "alice", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _turn_output(out: str, question: str) -> str:
    """What the example printed for the turn that asked ``question``."""
    start = out.index(f"you> {question}")
    end = out.find("you> ", start + 1)
    return out[start : end if end != -1 else len(out)]


@pytest.mark.slow
def test_script_records_rates_and_remembers(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    out = _run(
        store_dir,
        "--session",
        "s1",
        "--script",
        "How do I reset my password?",
        "+",
        "I forgot my password, how can I reset it?",
        "skip",
        "What is 12 * 8 * 12?",
        "-",
    )
    with SessionStore(store_dir) as store:
        turns = store.get_session("s1", user="alice")
        assert store.get_session("s1") == []  # the turns are alice's
    assert [t.question for t in turns] == [
        "How do I reset my password?",
        "I forgot my password, how can I reset it?",
        "What is 12 * 8 * 12?",
    ]
    liked, again, disliked = turns
    assert liked.answer.startswith("To reset your Acme Notes password, open Settings")
    assert liked.answer.endswith("(Help centre: Resetting your password.)")
    assert len(liked.context) == 1 and liked.context[0].startswith(PASSWORD_ARTICLE)
    assert disliked.answer == "12 * 8 * 12 = 1152." and disliked.context == []
    assert [t.feedback_score for t in turns] == [5, None, 1]
    assert [t.user_id for t in turns] == ["alice"] * 3

    # the qa_id the custom stream announced is the id of the turn that was rated
    first = _turn_output(out, "How do I reset my password?")
    assert f"rated 👍 (turn {liked.qa_id})" in first
    assert f"rated 👎 (turn {disliked.qa_id})" in _turn_output(out, "What is 12 * 8 * 12?")

    # the liked answer came back in the next turn, and the model gave it again
    second = _turn_output(out, "I forgot my password, how can I reset it?")
    assert f"[memory: liked answer {liked.qa_id} shown to the model]" in second
    assert "[search_help_centre]" not in second
    assert again.answer == liked.answer and again.context == []
    assert "[memory:" not in first  # nothing was liked yet
    assert "4 turn" not in out and "3 turn(s) in session s1 of user 'alice'" in out


@pytest.mark.slow
def test_piped_stdin_in_a_new_process_and_session(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    _run(store_dir, "--session", "s1", "--script", "What is 12 * 8 * 12?", "-")
    with SessionStore(store_dir) as store:
        [disliked] = store.get_session("s1", user="alice")
    typed = "\n".join(
        [
            "How do I reset my password?",
            "",  # Enter: not rated
            "thanks, that was perfect",  # the agent rates the previous answer itself
            "skip",
            "I forgot my password, how can I reset it?",
            "skip",
            "What is 12 * 8 * 12?",
            "+",
        ]
    )
    out = _run(store_dir, "--session", "s2", stdin=typed + "\n")
    with SessionStore(store_dir) as store:
        turns = store.get_session("s2", user="alice")
    assert [t.question for t in turns] == [
        "How do I reset my password?",
        "thanks, that was perfect",
        "I forgot my password, how can I reset it?",
        "What is 12 * 8 * 12?",
    ]
    password, thanks, again, sums = turns
    # the toolkit (built without a session) rated the newest turn of the thread it ran in
    assert (password.feedback_score, password.feedback_text) == (5, "thanks, that was perfect")
    assert thanks.feedback_score is None and "[add_feedback]" in _turn_output(out, "thanks")
    # ... which made it memory for the next question
    memory = re.findall(r"\[memory: liked answer (\S+) shown", _turn_output(out, "I forgot"))
    assert memory == [password.qa_id] and again.answer == password.answer
    # the answer rated down in the first process is never shown to the model
    assert disliked.qa_id not in out
    assert sums.feedback_score == 5 and sums.answer == "12 * 8 * 12 = 1152."
