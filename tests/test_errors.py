"""The error contract: every error is a FeedbackPluginError, and "no such turn" is not
"the store is down"."""

from __future__ import annotations

import ast
import builtins
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from feedback_plugin import (
    FeedbackPluginError,
    FeedbackToolkit,
    SessionStore,
    StoreError,
    TurnNotFoundError,
    errors,
)
from feedback_plugin.backends import DiskBackend
from feedback_plugin.backends.base import SessionKey
from feedback_plugin.integrations.rest import create_app

PACKAGE = Path(__file__).resolve().parents[1] / "feedback_plugin"

# Raises of a builtin exception that never leave the library, or follow a protocol.
ALLOWED = {
    ("metrics.py", "KeyError"),  # analytics Metrics.group(value): a lookup, as a mapping raises it
    ("codec.py", "ValueError"),  # the same parser, once moved
}
PROTOCOL = {
    "AttributeError",  # a module's __getattr__ (PEP 562) must raise it
    "ImportError",  # an optional extra that is not installed: what `import` would say
    "NotImplementedError",
}


def _raised_builtins() -> list[tuple[str, str, int]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            call = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = call.id if isinstance(call, ast.Name) else None
            kind = getattr(builtins, name, None) if name else None
            if (
                isinstance(kind, type)
                and issubclass(kind, BaseException)
                and (path.name, name) not in ALLOWED
                and name not in PROTOCOL
            ):
                found.append((str(path.relative_to(PACKAGE)), str(name), node.lineno))
    return found


def test_the_library_raises_no_bare_builtin_exception() -> None:
    assert _raised_builtins() == []


def test_every_exception_class_of_the_library_is_in_the_tree() -> None:
    import importlib

    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        names = [
            node.name
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error")
        ]
        for name in names:
            kind = getattr(importlib.import_module(module), name)
            assert issubclass(kind, FeedbackPluginError), f"{module}.{name}"
    drawn = errors.__doc__ or ""
    assert all(name in drawn for name in errors.__all__)


# -- telling "no such turn" from "store down" ------------------------------------------------


class FailingUpdates(DiskBackend):
    """The real diskcache backend; ``update`` fails while ``down`` is set."""

    down = False
    updates = 0
    reads = 0

    def update(self, key: SessionKey, qa_id: str, change: Callable[[str], str]) -> str | None:
        self.updates += 1
        if self.down:
            raise OSError("disk unavailable")
        return super().update(key, qa_id, change)

    def get(self, key: SessionKey, qa_id: str) -> str | None:
        self.reads += 1
        return super().get(key, qa_id)


@pytest.fixture
def down(tmp_path: Path) -> Any:
    backend = FailingUpdates(tmp_path / "store")
    store = SessionStore(backend=backend, write_behind=False)
    yield store, backend
    store.close()


def test_rate_says_which(down: Any) -> None:
    store, backend = down
    turn = store.record("s1", "q", "a")
    entry = store.rate("s1", turn.qa_id, "good", 5)
    assert (entry.feedback_text, entry.feedback_score) == ("good", 5)
    with pytest.raises(TurnNotFoundError):
        store.rate("s1", "no-such-turn", feedback_score=5)
    with pytest.raises(TurnNotFoundError):
        store.clear_rating("s1", "no-such-turn")
    backend.down = True
    with pytest.raises(StoreError):
        store.rate("s1", turn.qa_id, feedback_score=1)
    with pytest.raises(StoreError):
        store.clear_rating("s1", turn.qa_id)
    # the boolean API stays cognee's: False for both
    assert store.add_feedback("s1", turn.qa_id, feedback_score=1) is False
    assert store.delete_feedback("s1", turn.qa_id) is False
    backend.down = False
    assert store.get_entry("s1", turn.qa_id).feedback_score == 5  # type: ignore[union-attr]
    assert store.clear_rating("s1", turn.qa_id).feedback_score is None


def test_the_agent_tool_says_the_store_is_unavailable(down: Any) -> None:
    store, backend = down
    turn = store.record("s1", "q", "a")
    add = {t.name: t for t in FeedbackToolkit(store=store, session_id="s1").get_tools()}[
        "add_feedback"
    ]
    missing = add.invoke({"qa_id": "nope", "feedback_score": 5})
    assert "no turn 'nope'" in missing
    backend.down = True
    unavailable = add.invoke({"qa_id": turn.qa_id, "feedback_score": 5})
    assert "store is unavailable, try again" in unavailable
    assert "no turn" not in unavailable


def test_rest_answers_404_or_503_from_one_write(down: Any) -> None:
    store, backend = down
    turn = store.record("s1", "q", "a")
    client = TestClient(create_app(store), base_url="http://localhost")
    url = f"/api/turns/{turn.qa_id}/feedback?session_id=s1"
    backend.reads = backend.updates = 0
    ok = client.put(url, json={"score": 4})
    assert ok.status_code == 200 and ok.json()["feedback_score"] == 4
    assert (backend.updates, backend.reads) == (1, 0)  # the write answers; no second read
    missing = client.put("/api/turns/nope/feedback?session_id=s1", json={"score": 4})
    assert missing.status_code == 404
    backend.down = True
    failed = client.put(url, json={"score": 1})
    assert failed.status_code == 503
    assert client.delete(url).status_code == 503
