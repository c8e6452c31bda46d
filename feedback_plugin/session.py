"""Module-level session API over a default store, modelled on cognee's ``session``.

>>> from feedback_plugin import session
>>> session.get_session("no-such-session")
[]

The default store lives in ``$FEEDBACK_PLUGIN_DIR`` (else a per-user data
directory, see :func:`feedback_plugin.store.default_location`); it is built on
first use, and rebuilt if ``FEEDBACK_PLUGIN_DIR`` changes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from .models import Id, SessionQAEntry
from .store import SessionStore, default_location

__all__ = [
    "add_feedback",
    "default_store",
    "delete_feedback",
    "get_session",
    "record",
    "thumbs",
]

_lock = threading.Lock()
_stores: dict[str, SessionStore] = {}


def default_store() -> SessionStore:
    """The store at :func:`~feedback_plugin.store.default_location`, one per location."""
    location = default_location()
    store = _stores.get(location)
    if store is None:
        with _lock:
            store = _stores.get(location)
            if store is None:
                store = _stores[location] = SessionStore(location)
    return store


def get_session(
    session_id: Id, *, user: str | None = None, last_n: int | None = None
) -> list[SessionQAEntry]:
    """See :meth:`SessionStore.get_session`."""
    return default_store().get_session(session_id, user=user, last_n=last_n)


def add_feedback(
    session_id: Id,
    qa_id: Id,
    feedback_text: str | None = None,
    feedback_score: int | None = None,
    *,
    user: str | None = None,
    correction: str | None = None,
) -> bool:
    """See :meth:`SessionStore.add_feedback`."""
    return default_store().add_feedback(
        session_id, qa_id, feedback_text, feedback_score, user=user, correction=correction
    )


def delete_feedback(session_id: Id, qa_id: Id, *, user: str | None = None) -> bool:
    """See :meth:`SessionStore.delete_feedback`."""
    return default_store().delete_feedback(session_id, qa_id, user=user)


def thumbs(
    session_id: Id,
    qa_id: Id,
    up: bool,
    feedback_text: str | None = None,
    *,
    user: str | None = None,
) -> bool:
    """See :meth:`SessionStore.thumbs`."""
    return default_store().thumbs(session_id, qa_id, up, feedback_text, user=user)


def record(
    session_id: Id,
    question: str,
    answer: str,
    context: Iterable[str] = (),
    *,
    user: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    qa_id: Id | None = None,
    wait: bool | None = None,
    memory_ids: Iterable[Any] | None = None,
) -> SessionQAEntry:
    """See :meth:`SessionStore.record`."""
    return default_store().record(
        session_id,
        question,
        answer,
        context,
        user=user,
        metadata=metadata,
        qa_id=qa_id,
        wait=wait,
        memory_ids=memory_ids,
    )
