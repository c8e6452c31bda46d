"""REST endpoints for a whole conversation's rating (:mod:`feedback_plugin.session_ratings`).

Mounted by :func:`~feedback_plugin.integrations.rest.create_router` under its
prefix, with its key checks::

    GET    /api/sessions/feedback?session_id=...   the session's rating
    PUT    /api/sessions/feedback?session_id=...   rate the session (score, thumbs, rating, comment)
    DELETE /api/sessions/feedback?session_id=...   clear its rating (its turns stay)

The session id travels in the query string, as everywhere in the API (any
string is a session id). A session without a turn of the caller's is 404, like
another user's. Each answer is a :class:`~.rest_models.SessionRating`: the
rating, when it was recorded (``recorded_at``), and whether any of the
session's turns is in positive memory (``remembered``), read back from the
store after the change.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query

from ..errors import StoreError
from ..models import MAX_ID_LENGTH
from ..store import SessionStore
from .rest_guards import Guards
from .rest_models import SessionFeedbackRequest, SessionRating, session_rating

__all__ = ["session_routes"]

SessionId = Annotated[
    str,
    Query(min_length=1, max_length=MAX_ID_LENGTH, description="the session (any non-empty string)"),
]


def session_routes(store: SessionStore, guards: Guards) -> APIRouter:
    """The session-rating routes, guarded like the rest of the router."""
    Reader = Annotated[str | None, Depends(guards.read)]
    Writer = Annotated[str | None, Depends(guards.write)]
    responses, errors, auth_codes = guards.responses, guards.errors, guards.auth_codes
    router = guards.router()

    async def answer(session_id: str, user: str | None, *, stored: bool = True) -> SessionRating:
        """The session's rating as stored now; 404 without a turn, 503 when a write that
        should have worked did not."""
        entries = await store.aget_session(session_id, user=user)
        if not entries:
            raise HTTPException(404, "no such session")
        if not stored:  # the session is there: the store failed (and logged why)
            raise StoreError("the session's rating was not stored")
        return session_rating(session_id, entries)

    @router.get(
        "/sessions/feedback",
        response_model=SessionRating,
        summary="A session's own rating, and whether its turns are in positive memory",
        responses=responses(*auth_codes, 404, 503),
    )
    async def get_session_feedback(user: Reader, session_id: SessionId) -> SessionRating:
        with errors("get session feedback"):
            return await answer(session_id, user)

    @router.put(
        "/sessions/feedback",
        response_model=SessionRating,
        summary="Rate a whole conversation (score, thumbs or rating, comment)",
        responses=responses(400, *auth_codes, 404, 413, 415, 503),
    )
    async def put_session_feedback(
        user: Writer, session_id: SessionId, feedback: SessionFeedbackRequest
    ) -> SessionRating:
        with errors("rate session"):
            stored = await store.aadd_session_feedback(
                session_id, feedback.text, feedback.effective_score, user=user
            )
            return await answer(session_id, user, stored=stored)

    @router.delete(
        "/sessions/feedback",
        response_model=SessionRating,
        summary="Clear a conversation's rating (its turns and their ratings stay)",
        responses=responses(*auth_codes, 404, 503),
    )
    async def delete_session_feedback(user: Writer, session_id: SessionId) -> SessionRating:
        with errors("clear session feedback"):
            stored = await store.adelete_session_feedback(session_id, user=user)
            return await answer(session_id, user, stored=stored)

    return router
