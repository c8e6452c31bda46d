"""feedback_plugin: memory of what your users liked, for LangChain chat apps.

Record every chat turn with :class:`FeedbackCallbackHandler`, rate turns
through :class:`SessionStore` (``add_feedback``, ``thumbs``,
``delete_feedback``), and hand liked turns back to the chain.
"""

from . import session
from .capture import (
    FeedbackCallbackHandler,
    disable,
    enable,
    enabled,
    with_configurable_session,
)
from .errors import (
    ConfigurationError,
    FeedbackPluginError,
    InvalidFeedbackError,
    InvalidIdError,
    StoreError,
)
from .memory import PositiveExampleSelector, PositiveMemoryRetriever
from .models import SessionQAEntry
from .store import SessionStore
from .tools import FeedbackToolkit

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "FeedbackCallbackHandler",
    "FeedbackPluginError",
    "FeedbackToolkit",
    "InvalidFeedbackError",
    "InvalidIdError",
    "PositiveExampleSelector",
    "PositiveMemoryRetriever",
    "SessionQAEntry",
    "SessionStore",
    "StoreError",
    "__version__",
    "disable",
    "enable",
    "enabled",
    "session",
    "with_configurable_session",
]
