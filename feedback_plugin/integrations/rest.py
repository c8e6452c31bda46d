"""REST API for feedback: a FastAPI router to mount in an app, and a ready app.

Install with ``pip install "feedback-plugin[web]"``. Mount the router in an
existing FastAPI app::

    from fastapi import FastAPI
    from feedback_plugin import SessionStore
    from feedback_plugin.integrations.rest import ApiKeyAuth, create_router

    app = FastAPI()
    app.include_router(create_router(SessionStore(), auth=ApiKeyAuth({"s3cret": "alice"})))

or run the ready app (keys from ``FEEDBACK_PLUGIN_API_KEYS``)::

    uvicorn --factory feedback_plugin.integrations.rest:create_app

Endpoints (all under ``/api``, all scoped to the caller's user)::

    GET    /api/sessions?feedback=any|positive|negative|unrated   session summaries
    GET    /api/sessions/feedback?session_id=...                  a session's own rating
    PUT    /api/sessions/feedback?session_id=...                  rate a whole session
    DELETE /api/sessions/feedback?session_id=...                  clear its rating
    POST   /api/turns                                             record a turn (201)
    GET    /api/turns?session_id=...&last_n=...                   a session's turns
    GET    /api/turns/{qa_id}?session_id=...                      one turn
    PUT    /api/turns/{qa_id}/feedback?session_id=...             rate a turn
    DELETE /api/turns/{qa_id}/feedback?session_id=...             clear its rating
    GET    /api/memory?q=...&k=...                                positive memory search
    POST   /api/sessions/feedback/words?session_id=...            feedback in plain words
    GET    /api/feedback-tasks/{task_id}                          a background one's task

A turn is served with every field of :class:`~feedback_plugin.SessionQAEntry`
(``memory_ids`` ``[]`` when none). A feedback answer (``PUT``/``DELETE`` of a
turn's or a session's feedback) also says whether the turn is in positive memory
now (``remembered``; for a session, whether any of its turns is) and when the
feedback was recorded (``recorded_at``). ``rating: "positive"|"negative"`` is
thumbs up / down in words (:mod:`.rest_sessions` has the session routes).
Feedback in the user's own words needs a chat model (``feedback_model=``; 501
without one): :mod:`.rest_words`.

``GET /api/memory`` searches by words (BM25), or, given ``embeddings``, by words
and by meaning (:func:`~feedback_plugin.memory.search_memory`'s fusion), so a
question in other words finds a liked turn that shares none of them. Each hit
says how the query was searched (``"search": "words+meaning"`` or ``"words"``;
also the ``X-Memory-Search`` header, there when nothing was found), how the hit
was found (``"found_by"``: ``"words"``, ``"meaning"`` or ``"words+meaning"``),
its ``relevance`` and, found by meaning, its cosine ``similarity`` to the query
(:mod:`~feedback_plugin.integrations.explained_memory`).

Session ids travel in the query string because any string (``/``, ``..``,
``?``, unicode) is a valid session id; turn ids go in the path, percent-encoded
(``/`` as ``%2F`` works too). Listing the turns of a session that does not
exist, or is another user's, gives ``[]``; a single turn gives 404.
``/api/sessions`` reads every turn of the caller's sessions to count ratings,
so its cost grows with the caller's number of turns.

Auth: ``Authorization: Bearer <key>``, each key mapped to one user
(:class:`ApiKeyAuth`, from :mod:`~feedback_plugin.integrations.auth`, which
the demo chat shares; re-exported here). A key acts only on its own user's turns: another
user's turn answers 404, exactly like a turn that does not exist. A key has
the scopes ``read`` (GET) and ``feedback`` (PUT/DELETE/POST), both by default.
Without auth (``auth=None``) the API is open and acts as user ``None``: for
local demos only.

Status codes: 400 a PUT body that cannot even be read (or, from
:func:`create_app`, a ``Host`` it does not answer to), 401 missing or unknown
key (with ``WWW-Authenticate: Bearer``), 403 key without the needed scope,
404 unknown turn (or session), 413 body over ``max_body_bytes`` (1 MiB by default), 415 a
body not sent as ``application/json``, 422 bad input (score not an int 1..5
or not finite, score and thumbs together, no feedback at all, empty ids, ids
over 1024 or texts over 1,000,000 characters: the store's own limits), 429
over the optional per-key ``rate_limit`` (with ``Retry-After``), 501 feedback
in words without a ``feedback_model``, 502 that model failed, 503 store
unavailable. Authentication comes first: a request without a valid key gets
its 401 before its body is looked at. Every error body is JSON ``{"detail":
...}`` (in :func:`create_app`; an app that mounts the router gets the same with
:func:`~feedback_plugin.integrations.guards.install_json_errors`); a request
that fails changes nothing. Text that UTF-8 cannot carry (a lone surrogate
such as ``"\ud800"``) is accepted and served back escaped in the JSON.

Rating buckets used by ``/api/sessions`` are :mod:`feedback_plugin.ratings`':
a turn is *positive* when its score is >= 4 (what positive memory returns;
thumbs up stores 5), *negative* when its score is <= 2 (thumbs down stores
1), *unrated* when it has no score (a comment or a correction alone does not
rate a turn). A turn scored 3 is in none of the three. ``GET /api/ratings``
(no auth) serves the scale and thresholds, so a browser never hard-codes them.
"""

import json
import logging
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import Annotated, Any, TypeAlias

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from langchain_core.embeddings import Embeddings
from langchain_core.runnables import Runnable
from pydantic import TypeAdapter

from ..codec import EXTENSIONS
from ..errors import (
    ArgumentTypeError,
    ConfigurationError,
    InvalidFeedbackError,
    InvalidIdError,
    StoreError,
    TurnNotFoundError,
)
from ..models import (
    MAX_ID_LENGTH,
    SessionQAEntry,
)
from ..ratings import (
    NEGATIVE_MAX_SCORE,
    POSITIVE_MIN_SCORE,
    thresholds,
)
from ..store import SessionStore
from .auth import (
    ENV_KEYS,
    OPEN,
    ApiKeyAuth,
    Principal,
    authenticate,
    authorize,
    check_scope,
    guarded_route,
)
from .explained_memory import SEARCH_HEADER, aexplain_memory
from .guards import (
    AllowedHosts,
    RateLimit,
    SafeJSONResponse,
    allow_open_setting,
    allowed_hosts_setting,
    body_limit_setting,
    check_open_mode,
    install_json_errors,
    rate_limit_setting,
)
from .rest_guards import Guards
from .rest_models import (
    KEEP,
    ErrorResponse,
    FeedbackAnswer,
    FeedbackFilter,
    FeedbackRequest,
    MemoryHit,
    Ratings,
    SessionSummary,
    Turn,
    TurnRequest,
    summary,
)
from .rest_sessions import session_routes
from .rest_words import check_model, words_routes

__all__ = ["ApiKeyAuth", "authorize", "create_app", "create_router", "guarded_route"]

log = logging.getLogger("feedback_plugin")

MAX_MEMORY_K = 50

MemoryEmbeddings: TypeAlias = Embeddings | Callable[[], Embeddings | None] | None
"""What ``GET /api/memory`` searches by meaning with: embeddings, a function giving the
ones to use now (``None``: by words, e.g. while a model loads), or ``None`` (by words)."""


# -- the router ----------------------------------------------------------------

_open_warned = False
_open_warned_lock = threading.Lock()


def _warn_open() -> None:
    global _open_warned
    with _open_warned_lock:
        if _open_warned:
            return
        _open_warned = True
    log.warning(
        "feedback_plugin REST API has no auth: anyone who can reach it reads and rates "
        "the turns of user None. Set %s for anything but a local demo.",
        ENV_KEYS,
    )


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "the body could not be read (not UTF-8 / not JSON)",
        401: "missing or unknown API key",
        501: "no chat model is configured for feedback in words",
        502: "the chat model failed (nothing was stored)",
        403: "the API key lacks the scope this needs",
        404: "no such turn (or session) for this user",
        413: "the request body is larger than the server's limit",
        415: "the body was not sent as JSON (Content-Type: application/json)",
        429: "over the rate limit of this API key (see Retry-After)",
        503: "the store is unavailable",
    }
    return {code: {"model": ErrorResponse, "description": text[code]} for code in codes}


@contextmanager
def store_errors(where: str) -> Iterator[None]:
    """Store failures become 503; bad ids or ratings the models let through become 422.

    ``OSError`` and ``sqlite3.Error`` count as store failures too: the memory
    search can meet them raw (building the index scans the backend directly).
    """
    try:
        yield
    except TurnNotFoundError as exc:
        raise HTTPException(404, "no such turn") from exc
    except (StoreError, OSError, sqlite3.Error) as exc:
        log.warning("feedback_plugin REST: %s failed: %s: %s", where, type(exc).__name__, exc)
        raise HTTPException(
            status_code=503,
            detail="the feedback store is unavailable, try again later",
            headers={"Retry-After": "5"},
        ) from exc
    except (InvalidIdError, InvalidFeedbackError) as exc:
        # Only the library's own input errors: a stored payload that fails to
        # parse (a pydantic ValueError) must stay a server error.
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query",), "msg": str(exc), "input": None}]
        ) from exc


def create_router(
    store: SessionStore,
    *,
    auth: ApiKeyAuth | None = None,
    memory_k: int = 4,
    max_body_bytes: int | None = None,
    rate_limit: str | RateLimit | None = None,
    embeddings: MemoryEmbeddings = None,
    feedback_model: Runnable[Any, Any] | None = None,
) -> APIRouter:
    """The feedback endpoints (prefix ``/api``) over ``store``.

    Args:
        store: where turns and feedback live.
        auth: the API keys; ``None`` makes the API open, acting as user ``None``
            (a warning is logged once).
        memory_k: how many hits ``/api/memory`` returns when ``k`` is not given.
        max_body_bytes: the largest request body (default 1 MiB); 413 beyond.
        rate_limit: requests per API key (per client address when open), e.g.
            ``"60/minute"`` (needs ``feedback-plugin[ratelimit]``); ``None``: no limit.
        embeddings: ``/api/memory`` finds turns by meaning too with these LangChain
            embeddings (or those a function returns at each search, ``None`` meaning
            by words); ``None``: by words. A :func:`feedback_plugin.embeddings.local`
            model is best loaded first (``.load()``): the first search waits for it.
        feedback_model: the LangChain chat model that reads feedback in plain words
            (``POST /api/sessions/feedback/words``); ``None``: those routes answer 501.
    """
    if not isinstance(store, SessionStore):
        raise ArgumentTypeError(f"store must be a SessionStore, got {type(store).__name__}")
    if auth is not None and not isinstance(auth, ApiKeyAuth):
        raise ArgumentTypeError(f"auth must be an ApiKeyAuth or None, got {type(auth).__name__}")
    if type(memory_k) is not int or not 1 <= memory_k <= MAX_MEMORY_K:
        raise ConfigurationError(f"memory_k must be an int from 1 to {MAX_MEMORY_K}")
    meaning = _embeddings_now(embeddings)
    interpreter = check_model(feedback_model)

    if auth is None:
        _warn_open()
        auth_codes: tuple[int, ...] = ()

        def scoped(scope: str) -> Callable[..., Awaitable[str | None]]:
            async def user() -> str | None:
                return OPEN.user

            return user
    else:
        keys = auth
        bearer = HTTPBearer(
            auto_error=False,
            scheme_name="ApiKey",
            description="an API key mapped to one user: `Authorization: Bearer <key>`",
        )
        auth_codes = (401, 403)

        # The route class has checked the key and its scope before the body was read,
        # and left the Principal on the request; the dependency takes it from there
        # (and declares the key for the OpenAPI schema).
        def scoped(scope: str) -> Callable[..., Awaitable[str | None]]:
            async def user(
                request: Request,
                _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
            ) -> str | None:
                who = getattr(request.state, "principal", None)
                if not isinstance(who, Principal):
                    who = authenticate(keys, request)
                check_scope(who, scope)
                return who.user

            return user

    limiter = rate_limit_setting(rate_limit, {})
    if limiter is not None:
        auth_codes = (*auth_codes, 429)
    route_class = guarded_route(auth, max_body_bytes=max_body_bytes, rate_limit=limiter)

    Reader = Annotated[str | None, Depends(scoped("read"))]
    Writer = Annotated[str | None, Depends(scoped("feedback"))]
    SessionId = Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_ID_LENGTH,
            description="the session (any non-empty string)",
        ),
    ]
    QaId = Annotated[
        str,
        PathParam(
            min_length=1, max_length=MAX_ID_LENGTH, description="the turn's id (percent-encoded)"
        ),
    ]

    router = APIRouter(
        prefix="/api",
        tags=["feedback"],
        route_class=route_class,
        default_response_class=SafeJSONResponse,
    )

    async def existing(session_id: str, qa_id: str, user: str | None) -> SessionQAEntry:
        entry = await store.aget_entry(session_id, qa_id, user=user)
        if entry is None:
            raise HTTPException(404, "no such turn")
        return entry

    # no key, no guard: the numbers are public, and <feedback-buttons> reads them first
    public = APIRouter(tags=["feedback"], default_response_class=SafeJSONResponse)

    @public.get(
        "/ratings",
        response_model=Ratings,
        summary="The score scale and the positive / negative thresholds (no auth)",
    )
    async def ratings() -> Ratings:
        return Ratings(**thresholds())

    router.include_router(public)

    @router.get(
        "/sessions",
        response_model=list[SessionSummary],
        summary="List the caller's sessions, filtered by feedback",
        responses=_responses(*auth_codes, 503),
    )
    async def list_sessions(
        user: Reader,
        feedback: Annotated[
            FeedbackFilter,
            Query(
                description="any: every session; positive / negative / unrated: sessions "
                f"with at least one turn scored >= {POSITIVE_MIN_SCORE} / scored <= "
                f"{NEGATIVE_MAX_SCORE} / without a score"
            ),
        ] = "any",
    ) -> list[SessionSummary]:
        keep = KEEP[feedback]
        out = []
        with store_errors("list sessions"):
            for session_id in await store.alist_sessions(user=user):
                found = summary(session_id, await store.aget_session(session_id, user=user))
                if found.turns and keep(found):
                    out.append(found)
        return out

    guards = Guards(
        read=scoped("read"),
        write=scoped("feedback"),
        route_class=route_class,
        responses=_responses,
        errors=store_errors,
        auth_codes=auth_codes,
    )
    router.include_router(session_routes(store, guards))
    router.include_router(words_routes(store, interpreter, guards))

    @router.post(
        "/turns",
        response_model=Turn,
        status_code=201,
        summary="Record a turn (question, answer, context); returns it with its new qa_id",
        responses=_responses(400, *auth_codes, 413, 415, 503),
    )
    async def record_turn(user: Writer, turn: TurnRequest, request: Request) -> Response:
        with store_errors("record"):  # written before the answer: a GET right after sees it
            entry = await store.arecord(
                turn.session_id,
                turn.question,
                turn.answer,
                turn.context,
                user=user,
                metadata=turn.metadata,
                wait=True,
                memory_ids=turn.memory_refs(),
            )
        where = request.url_for("get_turn", qa_id=entry.qa_id)
        return _turn_json(
            entry,
            status_code=201,
            headers={"Location": str(where.include_query_params(session_id=entry.session_id))},
        )

    @router.get(
        "/turns",
        response_model=list[Turn],
        summary="A session's turns, oldest first",
        responses=_responses(*auth_codes, 503),
    )
    async def list_turns(
        user: Reader,
        session_id: SessionId,
        last_n: Annotated[int | None, Query(ge=0, description="only the newest n turns")] = None,
    ) -> Response:
        with store_errors("get session"):
            turns = await store.aget_session(session_id, user=user, last_n=last_n)
        return _turns_json(turns)

    @router.get(
        "/turns/{qa_id:path}",
        response_model=Turn,
        summary="One turn",
        responses=_responses(*auth_codes, 404, 503),
    )
    async def get_turn(user: Reader, qa_id: QaId, session_id: SessionId) -> Response:
        with store_errors("get turn"):
            return _turn_json(await existing(session_id, qa_id, user))

    @router.put(
        "/turns/{qa_id:path}/feedback",
        response_model=FeedbackAnswer,
        summary="Rate a turn (score, thumbs or rating, comment, correction); returns the turn",
        responses=_responses(400, *auth_codes, 404, 413, 415, 503),
    )
    async def put_feedback(
        user: Writer, qa_id: QaId, session_id: SessionId, feedback: FeedbackRequest
    ) -> Response:
        with store_errors("add feedback"):  # one write: 404 and 503 come from it
            entry = await store.arate(
                session_id,
                qa_id,
                feedback.text,
                feedback.effective_score,
                user=user,
                correction=feedback.correction,
            )
        return _feedback_json(entry)

    @router.delete(
        "/turns/{qa_id:path}/feedback",
        response_model=FeedbackAnswer,
        summary="Clear a turn's feedback (the turn stays); returns the turn",
        responses=_responses(*auth_codes, 404, 503),
    )
    async def delete_feedback(user: Writer, qa_id: QaId, session_id: SessionId) -> Response:
        with store_errors("delete feedback"):
            return _feedback_json(await store.aclear_rating(session_id, qa_id, user=user))

    @router.get(
        "/memory",
        response_model=list[MemoryHit],
        summary="Search the caller's positive memory (by words, and by meaning with embeddings)",
        responses=_responses(*auth_codes, 503),
    )
    async def memory(
        user: Reader,
        response: Response,
        q: Annotated[str, Query(description="what to look for")],
        k: Annotated[
            int | None, Query(ge=1, le=MAX_MEMORY_K, description=f"hits (default {memory_k})")
        ] = None,
    ) -> list[MemoryHit]:
        with store_errors("search memory"):
            found = await aexplain_memory(store, q, meaning(), k=k or memory_k, user=user)
        response.headers[SEARCH_HEADER] = found.search
        return [
            MemoryHit(
                qa_id=hit.entry.qa_id,
                session_id=hit.entry.session_id,
                question=hit.entry.question,
                answer=hit.entry.best_answer,
                feedback_score=hit.entry.feedback_score,
                relevance=hit.relevance,
                search=found.search,
                found_by=hit.found_by,
                similarity=hit.similarity,
            )
            for hit in found.hits
        ]

    return router


def _embeddings_now(embeddings: MemoryEmbeddings) -> Callable[[], Embeddings | None]:
    """The embeddings to search memory with, asked at each search."""
    if embeddings is None or isinstance(embeddings, Embeddings):
        fixed = embeddings
        return lambda: fixed
    if not callable(embeddings):
        raise ArgumentTypeError(
            f"embeddings must be LangChain Embeddings, a function returning them, or None; "
            f"got {type(embeddings).__name__}"
        )

    def now() -> Embeddings | None:
        found = embeddings()
        if found is not None and not isinstance(found, Embeddings):
            raise ArgumentTypeError(
                f"the embeddings function returned {type(found).__name__}, not Embeddings"
            )
        return found

    return now


_EMPTY = {
    name: json.dumps(SessionQAEntry.model_fields[name].get_default(call_default_factory=True))
    for name in EXTENSIONS
}
"""The fields the stored JSON leaves out while empty, as the API serves them then."""

_TIME: TypeAdapter[datetime | None] = TypeAdapter(datetime | None)


def _turn_text(entry: SessionQAEntry, more: str = "") -> str:
    """A turn as the API serves it: its stored JSON, written by the model's own encoder
    (FastAPI's validation and encoding of a returned model cost a rating request about
    a tenth of its time), with the empty fields the store leaves out (``memory_ids``:
    ``[]``) and ``more`` (``,"name":value`` pairs) added before its closing brace."""
    text = entry.to_json()
    empty = "".join(f',"{name}":{_EMPTY[name]}' for name in EXTENSIONS if not getattr(entry, name))
    return f"{text[:-1]}{empty}{more}}}"


def _turn_json(entry: SessionQAEntry, **response: Any) -> Response:
    return Response(_turn_text(entry), media_type="application/json", **response)


def _turns_json(entries: list[SessionQAEntry]) -> Response:
    body = "[" + ",".join(_turn_text(entry) for entry in entries) + "]"
    return Response(body, media_type="application/json")


def _feedback_json(entry: SessionQAEntry) -> Response:
    """The turn a feedback request left, with ``remembered`` (positive memory hands it
    back now) and ``recorded_at`` (when the feedback was recorded)."""
    remembered = "true" if entry.remembered else "false"
    recorded_at = _TIME.dump_json(entry.feedback_time).decode()
    more = f',"remembered":{remembered},"recorded_at":{recorded_at}'
    return Response(_turn_text(entry, more), media_type="application/json")


def closing_store(store: SessionStore | None) -> Callable[[FastAPI], Any]:
    """A FastAPI lifespan that closes ``store`` (if any) when the app shuts down."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        try:
            yield
        finally:
            if store is not None:
                store.close()

    return lifespan


def create_app(
    store: SessionStore | None = None,
    *,
    auth: ApiKeyAuth | None = None,
    allowed_hosts: Sequence[str] | None = None,
    max_body_bytes: int | None = None,
    rate_limit: str | RateLimit | None = None,
    allow_open: bool | None = None,
    embeddings: MemoryEmbeddings = None,
    feedback_model: Runnable[Any, Any] | None = None,
) -> FastAPI:
    """A FastAPI app serving :func:`create_router` plus ``GET /healthz``.

    ``store`` defaults to ``SessionStore()`` (``$FEEDBACK_PLUGIN_DIR``), closed
    when the app shuts down; ``auth`` defaults to :meth:`ApiKeyAuth.from_env`
    (open, with a warning, when no key is configured).

    Args:
        allowed_hosts: the ``Host`` names answered (``"*.example.com"`` for
            subdomains, ``"*"`` for any); others get a 400. Default:
            ``$FEEDBACK_PLUGIN_ALLOWED_HOSTS`` (comma-separated), else
            ``localhost``, ``127.0.0.1`` and ``::1``.
        max_body_bytes: default ``$FEEDBACK_PLUGIN_MAX_BODY_BYTES``, else 1 MiB.
        rate_limit: default ``$FEEDBACK_PLUGIN_RATE_LIMIT`` (e.g. ``60/minute``),
            else none.
        allow_open: without API keys the app refuses (:class:`ConfigurationError`)
            to answer any non-loopback host unless this is true (default
            ``$FEEDBACK_PLUGIN_ALLOW_OPEN=1``).
        embeddings: ``/api/memory`` by meaning too (see :func:`create_router`).
        feedback_model: the chat model for feedback in plain words (see
            :func:`create_router`); ``None``: those routes answer 501.
    """
    the_auth = ApiKeyAuth.from_env() if auth is None else auth
    hosts = allowed_hosts_setting(allowed_hosts)
    if the_auth is None:
        check_open_mode(hosts, allow_open=allow_open_setting(allow_open))
    body_limit = body_limit_setting(max_body_bytes)
    limiter = rate_limit_setting(rate_limit)
    own_store = store is None
    the_store = SessionStore() if store is None else store

    from .. import __version__

    app = FastAPI(
        title="feedback_plugin",
        version=__version__,
        description="Recorded chat turns and their thumbs / score feedback.",
        lifespan=closing_store(the_store if own_store else None),
        default_response_class=SafeJSONResponse,
    )
    install_json_errors(app)
    app.add_middleware(AllowedHosts, hosts=hosts)
    app.include_router(
        create_router(
            the_store,
            auth=the_auth,
            max_body_bytes=body_limit,
            rate_limit=limiter,
            embeddings=embeddings,
            feedback_model=feedback_model,
        )
    )

    @app.get("/healthz", tags=["health"], summary="Liveness probe (no auth)")
    @app.head("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
