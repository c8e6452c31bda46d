"""``scripts/demo.sh`` tells a newcomer the command line that reads the demo's store.

The README's path: run the demo, then look into what it recorded with
``feedback-plugin``. The command is in ``.venv/bin`` only and its default
store is not the demo's, so the script prints the exact line; this test runs
the terminal demo (offline, scripted, it exits by itself), then runs the
printed lines as a user would paste them, from the repository.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"

pytestmark = pytest.mark.skipif(
    Path(sys.prefix).resolve() != VENV.resolve()
    or not (VENV / ".feedback-plugin-installed").is_file(),
    reason="runs scripts/demo.sh, which must find the project's .venv already installed",
)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_demo_prints_the_cli_line_for_its_store(tmp_path: Path) -> None:
    store = tmp_path / "demo store"  # a space, to check the printed line is quoted
    demo = _run(["bash", "scripts/demo.sh", "--cli", "--store", str(store)])
    assert demo.returncode == 0, demo.stderr
    lines = re.findall(
        r"^  (\.venv/bin/feedback-plugin .*? (?:sessions|show SESSION))", demo.stdout, re.M
    )
    assert len(lines) == 2, demo.stdout
    sessions, show = (shlex.split(line) for line in lines)
    assert sessions == [".venv/bin/feedback-plugin", "--store", str(store), "sessions"]

    listed = _run([*sessions[:-1], "--json", "sessions"])
    assert listed.returncode == 0, listed.stderr
    session_id = re.search(r"session '([^']+)'", demo.stdout).group(1)  # type: ignore[union-attr]
    assert session_id in listed.stdout

    shown = _run([*show[:-1], session_id[:8]])  # the short id the demo page shows
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"session {session_id}: 4 turns")
    assert "How do I reset my password?" in shown.stdout
