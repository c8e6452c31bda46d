"""The import surface of docs/api.md, and ``__all__`` pinned.

When a public name is added or removed on purpose, update ``EXPECTED_ALL``.
"""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pytest

import feedback_plugin

EXPECTED_ALL = [
    "ArgumentTypeError",
    "ConfigurationError",
    "FeedbackCallbackHandler",
    "FeedbackPluginError",
    "FeedbackToolkit",
    "ImportFormatError",
    "InvalidArgumentError",
    "InvalidFeedbackError",
    "InvalidIdError",
    "PositiveExampleSelector",
    "PositiveMemoryRetriever",
    "SessionFeedback",
    "SessionQAEntry",
    "SessionStore",
    "StoreError",
    "TurnNotFoundError",
    "__version__",
    "disable",
    "enable",
    "enabled",
    "session",
    "with_configurable_session",
]

REPO = Path(__file__).resolve().parents[1]
EMPTY = inspect.Parameter.empty
KW = inspect.Parameter.KEYWORD_ONLY
POS = inspect.Parameter.POSITIONAL_OR_KEYWORD


def test_all_is_pinned_and_sorted() -> None:
    assert feedback_plugin.__all__ == EXPECTED_ALL
    assert sorted(feedback_plugin.__all__) == feedback_plugin.__all__
    assert len(set(feedback_plugin.__all__)) == len(feedback_plugin.__all__)


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_every_name_in_all_is_importable(name: str) -> None:
    assert getattr(feedback_plugin, name) is not None


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from feedback_plugin import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(feedback_plugin.__all__)


def test_contract_import_surface() -> None:
    from feedback_plugin import (
        FeedbackCallbackHandler,
        InvalidFeedbackError,
        SessionQAEntry,
        SessionStore,
        session,
    )

    assert inspect.isclass(SessionStore)
    assert inspect.isclass(FeedbackCallbackHandler)
    assert issubclass(InvalidFeedbackError, ValueError)
    assert isinstance(session, types.ModuleType)
    for fn in ("get_session", "add_feedback", "delete_feedback"):
        assert callable(getattr(session, fn))
    from pydantic import BaseModel

    assert issubclass(SessionQAEntry, BaseModel)


def test_callback_handler_is_a_langchain_handler() -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    assert issubclass(feedback_plugin.FeedbackCallbackHandler, BaseCallbackHandler)


def test_retriever_and_toolkit_are_langchain_types() -> None:
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.tools import BaseToolkit

    assert issubclass(feedback_plugin.PositiveMemoryRetriever, BaseRetriever)
    assert issubclass(feedback_plugin.FeedbackToolkit, BaseToolkit)


def test_error_hierarchy() -> None:
    from feedback_plugin import (
        ConfigurationError,
        FeedbackPluginError,
        InvalidFeedbackError,
        InvalidIdError,
        StoreError,
    )

    for exc in (InvalidFeedbackError, InvalidIdError, ConfigurationError):
        assert issubclass(exc, ValueError)
        assert issubclass(exc, FeedbackPluginError)
    assert issubclass(StoreError, RuntimeError)
    assert issubclass(StoreError, FeedbackPluginError)


def test_version_matches_pyproject() -> None:
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(r'^version = "([^"]+)"', text, re.M)  # no tomllib on Python 3.10
    assert match is not None
    assert feedback_plugin.__version__ == match.group(1)


def _params(fn: object) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(fn).parameters)  # type: ignore[arg-type]
    params.pop("self", None)
    return params


@pytest.mark.parametrize(
    ("method", "contract"),
    [
        ("__init__", [("location", POS, None), ("namespace", KW, None)]),
        (
            "record",
            [
                ("session_id", POS, EMPTY),
                ("question", POS, EMPTY),
                ("answer", POS, EMPTY),
                ("context", POS, ()),
                ("user", KW, None),
                ("metadata", KW, None),
                ("qa_id", KW, None),
            ],
        ),
        ("get_session", [("session_id", POS, EMPTY), ("user", KW, None), ("last_n", KW, None)]),
        (
            "add_feedback",
            [
                ("session_id", POS, EMPTY),
                ("qa_id", POS, EMPTY),
                ("feedback_text", POS, None),
                ("feedback_score", POS, None),
                ("user", KW, None),
            ],
        ),
        (
            "delete_feedback",
            [("session_id", POS, EMPTY), ("qa_id", POS, EMPTY), ("user", KW, None)],
        ),
        (
            "thumbs",
            [
                ("session_id", POS, EMPTY),
                ("qa_id", POS, EMPTY),
                ("up", POS, EMPTY),
                ("feedback_text", POS, None),
                ("user", KW, None),
            ],
        ),
    ],
)
def test_session_store_signatures_match_the_contract(
    method: str, contract: list[tuple[str, inspect._ParameterKind, object]]
) -> None:
    params = _params(getattr(feedback_plugin.SessionStore, method))
    names = list(params)
    positional = [n for n, kind, _ in contract if kind is POS]
    assert names[: len(positional)] == positional  # same order for positional callers
    for name, kind, default in contract:
        assert name in params, f"{method} lost parameter {name!r}"
        assert params[name].kind is kind, f"{method}({name}) kind changed"
        assert params[name].default == default, f"{method}({name}) default changed"
    for name, p in params.items():  # extensions must not break existing calls
        if name not in {n for n, _, _ in contract}:
            assert p.default is not EMPTY, f"{method}: new parameter {name!r} needs a default"
            assert p.kind is KW, f"{method}: new parameter {name!r} should be keyword-only"
