"""The README's "LangGraph and agents" section runs as pasted, and says what happens.

Its python blocks run one after the other in a fresh interpreter (as
``tests/test_docs.py`` runs the first example), followed by checks of what
the prose and the comments promise: the recorded turns, their users, the
qa_id of the custom stream, the one turn of an interrupt and resume.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_docs import _readme_section

pytest.importorskip("langchain.agents")

SECTION = "LangGraph and agents"

CHECKS = """
# -- what the section promises ------------------------------------------------------------
[t1] = store.get_session("t1", user="alice")
assert (t1.question, t1.answer) == (
    "How do I reset my password?", "Settings > Security > Reset password."
), t1
assert store.get_session("t1") == [] and t1.user_id == "alice"
assert (t1.feedback_score, t1.feedback_text) == (2, "too long")  # thumbs up, then the tool

[t2] = store.get_session("t2", user="alice")
assert t2.qa_id == qa_id and t2.feedback_score == 5, t2
assert t2.answer == "Open Settings > Security, choose Reset password."

[t3] = store.get_session("t3", user="bob")
assert store.get_session("t3", user="alice") == [] and t3.question == "Where are my invoices?"

[t4] = store.get_session("t4")  # the pause recorded nothing, the resume one turn
assert (t4.qa_id, t4.question, t4.answer) == (
    str(resume_id), "Reset my password", "Sent: check your inbox."
), t4
print("ok")
"""


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", _readme_section(SECTION), re.S)


def test_the_section_covers_what_a_user_needs() -> None:
    text = _readme_section(SECTION)
    for needed in (
        "pip install -e '.[agents]'",
        "examples/langgraph_agent.py",
        'stream_mode=["custom", "messages"]',
        '"feedback_qa_id"',
        'configurable": {"thread_id"',
        "context=",
        "Command(resume=",
        "FeedbackToolkit(store=store)",
    ):
        assert needed in text, needed
    assert len(_blocks()) == 5


@pytest.mark.slow
def test_the_sections_snippets_run_as_pasted(tmp_path: Path) -> None:
    code = "\n".join(_blocks()) + CHECKS
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    # what the snippets' comments say they print
    assert out[0] == "How do I reset my password? -> Settings > Security > Reset password."
    assert out[1] == "Open Settings > Security, choose Reset password."
    assert out[2] == "Invoices are under Settings > Billing."
    assert out[3] == "Reset my password -> Sent: check your inbox."
    assert out[4:] == ["2", "ok"]
