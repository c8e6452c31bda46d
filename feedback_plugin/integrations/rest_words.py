"""REST endpoints for feedback in plain words (:mod:`feedback_plugin.interpretation`).

Mounted by :func:`~feedback_plugin.integrations.rest.create_router` under its
prefix, with its key checks::

    POST /api/sessions/feedback/words?session_id=...   the user's words -> a rating
    GET  /api/feedback-tasks/{task_id}                  a background request, as it stands

A chat model reads the words against the session's newest turns and the rating
it finds is stored like a click (:meth:`SessionStore.aprocess_feedback`). The
app needs that model: ``create_router(..., feedback_model=llm)``; without one
both routes answer 501. ``"background": true`` answers 202 at once with the
task (:meth:`SessionStore.submit_feedback`), read back with the GET, by the
same user only. Tasks live in the server process that ran them.

Nothing internal leaves the server: a model that fails is a 502 (sync) or a
``failed`` task whose ``error`` is a generic sentence; the details go to the
``feedback_plugin`` logger.
"""

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from langchain_core.runnables import Runnable

from .. import calls
from ..errors import ArgumentTypeError, StoreError
from ..feedback_tasks import FeedbackTask
from ..interpretation import FeedbackResult
from ..models import MAX_ID_LENGTH
from ..store import SessionStore
from .guards import SafeJSONResponse
from .rest_guards import Guards
from .rest_models import WordsRequest

__all__ = ["MODEL_FAILED", "NO_MODEL", "TASK_FAILED", "check_model", "words_routes"]

log = logging.getLogger("feedback_plugin")

NO_MODEL = (
    "feedback in words needs a chat model, and none is configured on this server "
    "(create_router(..., feedback_model=...) or create_app(..., feedback_model=...))"
)
MODEL_FAILED = "the feedback model could not answer; the details are in the server log"
TASK_FAILED = "the feedback could not be processed; the details are in the server log"

SessionId = Annotated[
    str,
    Query(min_length=1, max_length=MAX_ID_LENGTH, description="the session (any non-empty string)"),
]
TaskId = Annotated[
    str,
    PathParam(min_length=1, max_length=MAX_ID_LENGTH, description="the id the 202 answer gave"),
]


def check_model(model: object) -> Runnable[Any, Any] | None:
    """``model`` if it is a LangChain chat model (any runnable) or ``None``."""
    if model is None or isinstance(model, Runnable):
        return model
    raise ArgumentTypeError(
        f"feedback_model must be a LangChain chat model or None, got {type(model).__name__}"
    )


def public_task(task: FeedbackTask) -> FeedbackTask:
    """The task as the API serves it: a failure says that it failed, not why."""
    return task.model_copy(update={"error": TASK_FAILED}) if task.error is not None else task


def words_routes(
    store: SessionStore,
    model: Runnable[Any, Any] | None,
    guards: Guards,
) -> APIRouter:
    """The feedback-in-words routes, guarded like the rest of the router."""
    Reader = Annotated[str | None, Depends(guards.read)]
    Writer = Annotated[str | None, Depends(guards.write)]
    responses, errors, auth_codes = guards.responses, guards.errors, guards.auth_codes

    async def configured() -> Runnable[Any, Any]:
        """The model, or 501 (before the body is read: without a model no body helps)."""
        if model is None:
            raise HTTPException(501, NO_MODEL)
        return model

    Model = Annotated[Runnable[Any, Any], Depends(configured)]
    router = guards.router()

    @router.post(
        "/sessions/feedback/words",
        response_model=FeedbackResult,
        summary="Feedback in the user's words: a chat model finds the rating and it is stored",
        responses={
            **responses(400, *auth_codes, 404, 413, 415, 501, 502, 503),
            202: {"model": FeedbackTask, "description": "background: the task, running"},
        },
    )
    async def feedback_in_words(
        user: Writer,
        llm: Model,
        session_id: SessionId,
        words: WordsRequest,
        request: Request,
    ) -> Any:
        with errors("feedback in words"):
            if not await store.aget_session(session_id, user=user, last_n=1):
                raise HTTPException(404, "no such session")
            if words.background:
                return _submitted(store, llm, session_id, words, user, request)
            return await _process(store, llm, session_id, words, user)

    @router.get(
        "/feedback-tasks/{task_id}",
        response_model=FeedbackTask,
        summary="A background feedback-in-words request: pending, running, done or failed",
        responses=responses(*auth_codes, 404, 501),
    )
    async def feedback_task(user: Reader, _: Model, task_id: TaskId) -> FeedbackTask:
        with errors("feedback task"):
            task = store.feedback_task(task_id, user=user)
        if task is None:
            raise HTTPException(404, "no such task")
        return public_task(task)

    return router


async def _process(
    store: SessionStore,
    model: Runnable[Any, Any],
    session_id: str,
    words: WordsRequest,
    user: str | None,
) -> FeedbackResult:
    """The request done now; a model that raises is a 502 (nothing was stored)."""
    try:
        return await store.aprocess_feedback(
            session_id,
            words.feedback_content,
            user=user,
            model=model,
            corrected_answer=words.corrected_answer,
        )
    except StoreError:
        raise
    except Exception as exc:
        log.warning("feedback_plugin REST: the feedback model failed: %s", calls.describe(exc))
        raise HTTPException(502, MODEL_FAILED) from exc


def _submitted(
    store: SessionStore,
    model: Runnable[Any, Any],
    session_id: str,
    words: WordsRequest,
    user: str | None,
    request: Request,
) -> Response:
    """The request queued: 202 with the task and where to read it."""
    task_id = store.submit_feedback(
        session_id,
        words.feedback_content,
        user=user,
        model=model,
        corrected_answer=words.corrected_answer,
    )
    task = store.feedback_task(task_id, user=user)
    assert task is not None  # just submitted, by this user
    where = str(request.url_for("feedback_task", task_id=task_id))
    return SafeJSONResponse(
        public_task(task).model_dump(mode="json"), status_code=202, headers={"Location": where}
    )
