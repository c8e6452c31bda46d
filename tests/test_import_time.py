"""What an import pulls in: the command line and the store start without LangChain.

``import feedback_plugin`` and ``feedback-plugin --help`` used to import
langchain-core (and langsmith through it), most of their start-up time,
although only the capture, memory and tools parts use it. The package's
``__init__`` files now import on first attribute access (PEP 562), and the
command imports the store and analytics inside the commands that use them.

These tests pin the behaviour, not a timing: each runs a fresh interpreter
and looks at ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import feedback_plugin

HEAVY = ("langchain_core", "langsmith")


def _modules_after(code: str) -> set[str]:
    """The modules loaded once ``code`` ran in a fresh interpreter (printed last, on stderr)."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)), file=sys.stderr)"
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stderr.splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_import_feedback_plugin_loads_no_langchain() -> None:
    modules = _modules_after("import feedback_plugin")
    assert _heavy(modules) == []
    assert "feedback_plugin.store" not in modules  # nor the store, until it is used


def test_cli_help_loads_neither_langchain_nor_the_store() -> None:
    modules = _modules_after(
        "import contextlib, io\n"
        "from feedback_plugin.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['--help']) == 0\n"
        "    assert main(['stats', '--help']) == 0"
    )
    assert _heavy(modules) == []
    assert "feedback_plugin.store" not in modules
    assert "feedback_plugin.analytics" not in modules


def test_cli_reading_commands_load_no_langchain(tmp_path: Path) -> None:
    from feedback_plugin import SessionStore

    location = tmp_path / "store"
    store = SessionStore(location)
    turn = store.record("s1", "How do I reset my password?", "Settings.")
    assert store.thumbs("s1", turn.qa_id, up=True)
    store.close()
    modules = _modules_after(
        "import contextlib, io\n"
        "from feedback_plugin.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    for argv in (['sessions'], ['stats'], ['show', 's1'], ['entries']):\n"
        f"        assert main(['--store', {str(location)!r}, *argv]) == 0, argv"
    )
    assert _heavy(modules) == []


def test_the_store_alone_loads_no_langchain(tmp_path: Path) -> None:
    modules = _modules_after(
        "from feedback_plugin import SessionStore\n"
        f"s = SessionStore({str(tmp_path / 'store')!r})\n"
        "t = s.record('s1', 'q', 'a')\n"
        "assert s.thumbs('s1', t.qa_id, up=True)\n"
        "s.close()"
    )
    assert _heavy(modules) == []


@pytest.mark.slow
@pytest.mark.parametrize("order", ["as listed", "reversed"])
def test_every_public_name_imports_first_thing(order: str) -> None:
    """``from feedback_plugin import X`` works in a fresh interpreter, whichever X comes first."""
    names = feedback_plugin.__all__ if order == "as listed" else feedback_plugin.__all__[::-1]
    code = "".join(f"from feedback_plugin import {n}\nassert {n} is not None\n" for n in names)
    modules = _modules_after(code + "from feedback_plugin.memory import *\n")
    assert "feedback_plugin.capture.handler" in modules


def test_names_are_listed_before_they_are_loaded() -> None:
    modules = _modules_after(
        "import feedback_plugin, feedback_plugin.memory\n"
        "for package in (feedback_plugin, feedback_plugin.memory):\n"
        "    missing = set(package.__all__) - set(dir(package))\n"
        "    assert not missing, (package.__name__, missing)"
    )
    assert _heavy(modules) == []


@pytest.mark.slow
def test_a_name_shared_with_a_submodule_is_the_function() -> None:
    """``enable`` is a function and a submodule of ``capture``: the function wins, in any order."""
    _modules_after(
        "import feedback_plugin.capture.enable\n"
        "import feedback_plugin\n"
        "from feedback_plugin.capture import enable\n"
        "assert callable(enable) and feedback_plugin.enable is enable, enable"
    )


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        feedback_plugin.NoSuchThing  # noqa: B018
    with pytest.raises(ImportError):
        exec("from feedback_plugin.memory import NoSuchThing", {})
