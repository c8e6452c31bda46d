"""The exceptions feedback_plugin raises.

Every exception is a :class:`FeedbackPluginError`, so one ``except`` catches
them all; each also derives from the builtin a caller would expect::

    FeedbackPluginError
    ├── InvalidFeedbackError   (also ValueError)   a score or text that cannot be stored
    ├── InvalidIdError         (also ValueError)   an empty or non-string session / turn id
    ├── ConfigurationError     (also ValueError)   a store location or option that cannot work
    └── StoreError             (also RuntimeError) the backend failed (disk full, server down, ...)

Bad input is refused before anything is written, so after any of the
``ValueError`` kinds nothing stored has changed. Feedback writes
(``add_feedback``, ``delete_feedback``, ``thumbs``) never raise
:class:`StoreError`: they log it and return ``False``, as the API promises.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "FeedbackPluginError",
    "InvalidFeedbackError",
    "InvalidIdError",
    "StoreError",
]


class FeedbackPluginError(Exception):
    """Base class of every error this library raises."""


class InvalidFeedbackError(FeedbackPluginError, ValueError):
    """A rating that cannot be stored (no text and no score, a score outside 1..5),
    or a text longer than :data:`~feedback_plugin.models.MAX_TEXT_LENGTH`."""


class InvalidIdError(FeedbackPluginError, ValueError):
    """An empty or non-string ``session_id`` / ``qa_id``."""


class ConfigurationError(FeedbackPluginError, ValueError):
    """A store location or option that cannot work."""


class StoreError(FeedbackPluginError, RuntimeError):
    """The storage backend failed; the message says which operation."""
