"""feedback_plugin: memory of what your users liked, for LangChain chat apps.

Record every chat turn with :class:`FeedbackCallbackHandler`, rate turns
through :class:`SessionStore` (``add_feedback``, ``thumbs``,
``delete_feedback``), and hand liked turns back to the chain.

Every public name is importable from here; each is loaded on first use
(PEP 562), so ``import feedback_plugin`` costs little and the command line
or a store alone never import LangChain (``tests/test_import_time.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    ArgumentTypeError,
    ConfigurationError,
    FeedbackPluginError,
    ImportFormatError,
    InvalidArgumentError,
    InvalidFeedbackError,
    InvalidIdError,
    StoreError,
    TurnNotFoundError,
)

if TYPE_CHECKING:
    from . import session
    from .capture.enable import disable, enable, enabled, with_configurable_session
    from .capture.handler import FeedbackCallbackHandler
    from .memory import PositiveExampleSelector, PositiveMemoryRetriever
    from .models import SessionFeedback, SessionQAEntry
    from .store import SessionStore
    from .tools import FeedbackToolkit

__version__ = "0.1.0"

__all__ = [
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

# Public name -> the submodule that defines it, imported on first access.
_LAZY = {
    "FeedbackCallbackHandler": ".capture",
    "disable": ".capture",
    "enable": ".capture",
    "enabled": ".capture",
    "with_configurable_session": ".capture",
    "PositiveExampleSelector": ".memory",
    "PositiveMemoryRetriever": ".memory",
    "SessionFeedback": ".models",
    "SessionQAEntry": ".models",
    "SessionStore": ".store",
    "FeedbackToolkit": ".tools",
}
_SUBMODULES = {"session"}  # public modules, imported on first access


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
