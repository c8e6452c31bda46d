"""The documents stay true: the API reference, the links, the README's first snippet.

* ``docs/api.md`` names only what exists, with the real parameter lists, and
  names everything public (``feedback_plugin.__all__``, ``SessionStore``'s
  methods, ``feedback_plugin.middleware.__all__``);
* no file points outside the repository, and every relative link in the
  README and ``docs/`` opens a file of the repository;
* the README's first code example runs as pasted (in a fresh interpreter);
* the durability figures the documents quote are the code's defaults.
"""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import feedback_plugin
from feedback_plugin import SessionStore

REPO = Path(__file__).resolve().parents[1]
API = REPO / "docs" / "api.md"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SKIP_DIRS = {".git", ".venv", "node_modules", "build", "dist", "data", "__pycache__"}

# -- docs/api.md ---------------------------------------------------------------------------

HEADING = re.compile(r"^#{2,4} `([A-Za-z_][\w.]*)(?:\((.*)\))?(?: -> [^`]+)?`\s*$", re.M)


def _api_headings() -> list[tuple[str, str | None]]:
    """(dotted name, parameter text or None) of every heading that names an object."""
    return [(m.group(1), m.group(2)) for m in HEADING.finditer(API.read_text(encoding="utf-8"))]


def _resolve(dotted: str) -> Any:
    """``SessionStore.record`` or ``integrations.rest.create_app``, from ``feedback_plugin``."""
    obj: Any = feedback_plugin
    path = "feedback_plugin"
    for part in dotted.split("."):
        path = f"{path}.{part}"
        if isinstance(obj, types.ModuleType) and not hasattr(obj, part):
            obj = importlib.import_module(path)  # a submodule not imported yet
        else:
            obj = getattr(obj, part)
    return obj


def _split_params(text: str) -> list[str]:
    """The parameter names of ``a, b=(), *, c=None, d='x'`` (markers ``*`` and ``/`` dropped)."""
    names, depth, current = [], 0, ""
    for ch in text + ",":
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            name = re.split(r"[=:]", current.strip(), maxsplit=1)[0].strip()
            if name and name not in ("*", "/"):
                names.append(name.lstrip("*"))
            current = ""
        else:
            current += ch
    return names


def _real_params(obj: Any) -> list[str]:
    target = obj.__init__ if inspect.isclass(obj) and not issubclass(obj, BaseModel) else obj
    params = inspect.signature(target).parameters
    return [n for n, p in params.items() if n != "self" and p.kind is not p.VAR_KEYWORD]


def test_api_reference_lists_only_what_exists() -> None:
    headings = _api_headings()
    assert len(headings) > 40, "docs/api.md: headings not found (format changed?)"
    for name, params in headings:
        try:
            obj = _resolve(name)
        except (AttributeError, ImportError) as exc:
            pytest.fail(f"docs/api.md names {name!r}, which does not exist ({exc})")
        if params is None:
            continue
        listed, real = _split_params(params), _real_params(obj)
        if inspect.isclass(obj) and issubclass(obj, BaseModel):
            # pydantic models: the fields listed exist, and every required one is listed
            fields = obj.model_fields
            assert set(listed) <= set(real), f"{name}: {set(listed) - set(real)} do not exist"
            required = {n for n, f in fields.items() if f.is_required()}
            assert required <= set(listed), f"{name}: required {required - set(listed)} missing"
        else:
            assert listed == real, f"docs/api.md: {name}({', '.join(listed)}) is {name}{real}"


def test_api_reference_lists_everything_public() -> None:
    listed = {name for name, _ in _api_headings()}
    missing = [n for n in feedback_plugin.__all__ if n not in listed]
    assert not missing, f"docs/api.md lacks headings for {missing}"
    methods = [n for n in dir(SessionStore) if not n.startswith("_")]
    missing = [m for m in methods if f"SessionStore.{m}" not in listed]
    assert not missing, f"docs/api.md lacks SessionStore.{missing}"
    functions = [f"session.{n}" for n in feedback_plugin.session.__all__]
    assert not [f for f in functions if f not in listed]


def test_api_reference_lists_the_middleware() -> None:
    """``feedback_plugin.middleware`` (the agents extra) is documented like the rest."""
    middleware = pytest.importorskip("feedback_plugin.middleware")
    listed = {name for name, _ in _api_headings()}
    missing = [n for n in middleware.__all__ if f"middleware.{n}" not in listed]
    assert not missing, f"docs/api.md lacks headings for middleware.{missing}"


# -- links -------------------------------------------------------------------------------------

# A path into a directory beside the repository, or a "shared/…md" document that is not in it.
OUTSIDE = re.compile(r"\.\./+shared\b|(?<![\w./-])shared/[\w.-]+\.md")
SUFFIXES = {".md", ".py", ".html", ".js", ".toml", ".sh", ".ipynb", ".cfg", ".txt"}


def _repo_files() -> list[Path]:
    files = []
    for path in REPO.rglob("*"):
        parts = set(path.relative_to(REPO).parts)
        if parts & SKIP_DIRS or any(p.endswith(".egg-info") for p in parts):
            continue
        if path.is_file() and path.suffix in SUFFIXES:
            files.append(path)
    return files


@pytest.mark.slow
def test_no_file_refers_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in _repo_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not found, "\n".join(found)


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_open_files_of_the_repository(doc: Path) -> None:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)  # not code
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor
        path = (doc.parent / target.split("#")[0]).resolve()
        if not path.exists() or REPO not in path.parents:
            broken.append(target)
    assert not broken, f"{doc.name}: links to nothing in the repository: {broken}"


# -- the README's first example ---------------------------------------------------------------


def _readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, f"README.md has no section '## {title}'"
    return match.group(1)


@pytest.mark.slow
def test_readme_first_example_runs_as_pasted(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", _readme_section("In a few lines"), re.S)
    assert len(blocks) == 2, "the section shows recording, then handing back"
    code = "\n".join(blocks) + (
        "\nassert store.get_entry('s1', turn.qa_id).feedback_score == 5"
        "\n[doc] = memory.invoke('password reset')"
        "\nassert doc.metadata['qa_id'] == turn.qa_id, doc"
        "\nassert [t.name for t in tools] == "
        "['add_feedback', 'clear_feedback', 'search_positive_memory']"
        "\nprint('ok')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_readme_installs_from_a_clone_first() -> None:
    """Until the package is published, the install lines that work come first."""
    section = _readme_section("Installing")
    assert "pip install -e ." in section and "git+" in section
    for line in section.splitlines():
        if re.match(r"pip install \"?feedback-plugin\b", line) and "git+" not in line:
            assert "once published" in line.lower(), line  # a PyPI line


# -- durability figures ------------------------------------------------------------------------


def test_quoted_flush_delays_are_the_defaults() -> None:
    params = inspect.signature(SessionStore).parameters
    interval_ms = round(params["flush_interval"].default * 1000)
    max_delay_s = params["flush_max_delay"].default
    for doc in (REPO / "README.md", REPO / "docs" / "backends.md"):
        text = doc.read_text(encoding="utf-8")
        assert f"`flush_interval` ({interval_ms} ms" in text, doc.name
        assert f"`flush_max_delay` ({max_delay_s:g} s" in text, doc.name
        for ms in re.findall(r"`flush_interval`,? \(?(\d+) ms", text):
            assert int(ms) == interval_ms, f"{doc.name}: flush_interval {ms} ms"
        for s in re.findall(r"`flush_max_delay`,? \(?(\d+(?:\.\d+)?) s\b", text):
            assert float(s) == max_delay_s, f"{doc.name}: flush_max_delay {s} s"
        assert "4 ms" not in text, f"{doc.name} still quotes an old measurement"


# -- the command's help, as the documents show it ----------------------------------------------

HELP_BLOCK = re.compile(r"### `feedback-plugin ((?:\w+ )?)--help`\n\n```text\n(.*?)```", re.S)


@pytest.mark.parametrize("doc", ["README.md", "docs/cli.md"])
def test_documented_help_is_the_real_help(
    doc: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from feedback_plugin.cli import main

    monkeypatch.setenv("COLUMNS", "100")  # the width the documents are written at
    blocks = HELP_BLOCK.findall((REPO / doc).read_text(encoding="utf-8"))
    assert len(blocks) == 8, f"{doc}: one help block per command and the top level"
    for command, shown in blocks:
        capsys.readouterr()
        assert main([*command.split(), "--help"]) == 0
        real = capsys.readouterr().out
        assert shown == real, f"{doc}: 'feedback-plugin {command}--help' is out of date"
