"""The exceptions feedback_plugin raises.

Every exception is a :class:`FeedbackPluginError`, so one ``except`` catches
them all; each also derives from the builtin a caller would expect::

    FeedbackPluginError
    ├── InvalidFeedbackError   (also ValueError)   a score or text that cannot be stored
    ├── InvalidIdError         (also ValueError)   an empty, too long or non-string id
    ├── InvalidArgumentError   (also ValueError)   another argument out of its range
    ├── ArgumentTypeError      (also TypeError)    an argument of the wrong type
    ├── ConfigurationError     (also ValueError)   a store location or option that cannot work
    ├── ImportFormatError      (also ValueError)   a line of an import file that is no entry
    ├── TurnNotFoundError      (also LookupError)  no such turn for this user
    └── StoreError             (also RuntimeError) the backend failed (disk full, server down, ...)

Bad input is refused before anything is written, so after any of the
``ValueError`` and ``TypeError`` kinds nothing stored has changed.

Feedback writes come in two forms. ``add_feedback``, ``thumbs`` and
``delete_feedback`` answer ``True`` / ``False`` (cognee's contract): they
never raise :class:`StoreError` or :class:`TurnNotFoundError`, they log the
store failure and return ``False``. ``rate`` and ``clear_rating`` say which:
they return the stored entry, or raise :class:`TurnNotFoundError` (no such
turn: nothing to retry) or :class:`StoreError` (the store is unavailable:
try again later).

Constructing a LangChain component of this library (retriever, example
selector, tools) validates its fields with pydantic, which reports a bad
field as pydantic's ``ValidationError`` (a ``ValueError``), as every
LangChain component does.
"""

from __future__ import annotations

__all__ = [
    "ArgumentTypeError",
    "ConfigurationError",
    "FeedbackPluginError",
    "ImportFormatError",
    "InvalidArgumentError",
    "InvalidFeedbackError",
    "InvalidIdError",
    "StoreError",
    "TurnNotFoundError",
]


class FeedbackPluginError(Exception):
    """Base class of every error this library raises."""


class InvalidFeedbackError(FeedbackPluginError, ValueError):
    """A rating that cannot be stored (no text and no score, a score outside 1..5),
    or a text longer than :data:`~feedback_plugin.models.MAX_TEXT_LENGTH`."""


class InvalidIdError(FeedbackPluginError, ValueError):
    """An empty, too long or non-string ``session_id`` / ``qa_id`` / user."""


class InvalidArgumentError(FeedbackPluginError, ValueError):
    """Another argument outside its range (``last_n=-1``, ``k=0``, an unknown format)."""


class ArgumentTypeError(FeedbackPluginError, TypeError):
    """An argument of the wrong type (a store that is not a ``SessionStore``, ...)."""


class ConfigurationError(FeedbackPluginError, ValueError):
    """A store location or option that cannot work."""


class ImportFormatError(FeedbackPluginError, ValueError):
    """A line of an import file that is not a raw entry; the message names the line."""


class TurnNotFoundError(FeedbackPluginError, LookupError):
    """No turn with that ``qa_id`` in that session for that user (nothing changed)."""


class StoreError(FeedbackPluginError, RuntimeError):
    """The storage backend failed; the message says which operation."""
