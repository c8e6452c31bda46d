"""Memory attribution: which remembered turns fed an answer, and what its rating says of them.

A recorded turn keeps, in ``memory_ids``, the qa_ids of the remembered turns
handed to the model for it (and in ``memory_sessions`` where each lives):
from :class:`~feedback_plugin.PositiveMemoryRetriever` documents inside the
run (the callback handler), from :class:`~feedback_plugin.middleware.FeedbackMiddleware`'s
injection, or given to ``record(..., memory_ids=...)``.

When that turn's score changes, each memory it used is told the answer's
outcome (:func:`.ratings.outcome`): its ``fed_outcomes`` maps the answer's
qa_id to ``"negative"`` or ``"positive"`` (a 3 or a cleared score takes the
answer back out). A memory that :func:`.ratings.hurts` -- at least two
negative answers, and more negative than positive -- is no longer
remembered, so every memory index drops it on its next change-feed read,
until the memory is itself rated again, which resets its record.

Telling a memory is best effort after the answer's own rating is stored: a
memory that no longer exists is passed over, and a store failure is logged,
never raised to the caller whose rating went through.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from . import calls
from .backends.base import Backend, SessionKey
from .models import SessionQAEntry
from .ratings import outcome

__all__ = ["MAX_SESSIONS_SEARCHED", "charge", "charges", "memory_keys"]

log = logging.getLogger("feedback_plugin")

MAX_SESSIONS_SEARCHED = 1000
"""A memory id given without its session is looked for in the answer's own session,
then in the user's newest sessions up to this many."""


def memory_keys(backend: Backend, entry: SessionQAEntry) -> list[tuple[SessionKey, str]]:
    """Where each memory ``entry`` used lives: ``((user, session_id), qa_id)``; memories
    whose session is unknown are found with one ``get_many`` over the user's sessions."""
    user = entry.user_id
    places = entry.memory_sessions
    known = [((user, places[q]), q) for q in entry.memory_ids if q in places]
    unknown = [q for q in entry.memory_ids if q not in entry.memory_sessions]
    if not unknown:
        return known
    sessions: list[str] = [entry.session_id]
    newest = backend.sessions(user)[-MAX_SESSIONS_SEARCHED:]
    sessions += [s for s in reversed(newest) if s != entry.session_id]
    refs = [((user, s), q) for q in unknown for s in sessions]
    found: dict[str, tuple[SessionKey, str]] = {}
    for ref, payload in zip(refs, backend.get_many(refs), strict=True):
        if payload is not None:
            found.setdefault(ref[1], ref)
    return known + list(found.values())


def charge(backend: Backend, entry: SessionQAEntry) -> int:
    """Tell every memory ``entry`` used how ``entry`` is now rated; return how many were
    told. Best effort: failures are logged, never raised."""
    if not entry.memory_ids:
        return 0
    verdict = outcome(entry)
    told = 0
    try:
        for key, qa_id in memory_keys(backend, entry):
            if backend.update(key, qa_id, calls.Outcome(entry.qa_id, verdict)) is not None:
                told += 1
    except Exception as exc:
        log.error(
            "feedback_plugin: the memories behind turn %r were not told its rating: %s",
            entry.qa_id,
            calls.describe(exc),
        )
    return told


def charges(changes: Collection[str]) -> bool:
    """Whether a feedback change of these fields can change what the answer says of the
    memories that fed it (its score)."""
    return "feedback_score" in changes
