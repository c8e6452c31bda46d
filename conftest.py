"""Pytest setup shared by the tests (tests/) and the doctests (feedback_plugin/).

The examples in the docstrings of every module in ``feedback_plugin`` run as
doctests (``pytest_collect_file`` below: ``--doctest-modules``, but for the
package only, not for the test files), so each module, the integrations
included, is imported: scripts/test.sh installs every extra.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent / "feedback_plugin"

# Importing chainlit writes .chainlit/ and .files/ into its app root (default: the cwd);
# collecting feedback_plugin.integrations.chainlit_feedback's doctests imports it.
os.environ.setdefault("CHAINLIT_APP_ROOT", tempfile.mkdtemp(prefix="chainlit-root-"))

# Redis memory index files (backends/redis_index.py) go to a temporary cache directory,
# never the user's: set here, before any child process starts, so children (subprocesses,
# the forkserver of tests/contract) inherit it; tests/conftest.py gives each test its own.
if "FEEDBACK_PLUGIN_CACHE_DIR" not in os.environ:
    os.environ["FEEDBACK_PLUGIN_CACHE_DIR"] = tempfile.mkdtemp(prefix="feedback-plugin-cache-")
    atexit.register(shutil.rmtree, os.environ["FEEDBACK_PLUGIN_CACHE_DIR"], True)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Each module of the package is a doctest module (``--doctest-modules`` does it too)."""
    if file_path.suffix != ".py" or PACKAGE not in file_path.parents:
        return None
    if parent.config.getoption("doctestmodules") or file_path.name == "__main__.py":
        return None
    from _pytest.doctest import DoctestModule

    return DoctestModule.from_parent(parent, path=file_path)


@pytest.fixture(autouse=True)
def _doctest_default_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """A doctest's default store (``FEEDBACK_PLUGIN_DIR``) is a fresh directory, never the
    user's data directory; tests/conftest.py does the same for the tests."""
    if not isinstance(request.node, pytest.DoctestItem):
        yield
        return
    path = tmp_path_factory.mktemp("doctest") / "default-store"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEEDBACK_PLUGIN_DIR", str(path))
        yield
        from feedback_plugin import session

        session.default_store().close()
