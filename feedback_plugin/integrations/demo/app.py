"""The demo chat's FastAPI app: the page, ``POST /api/chat[/stream]``, the history.

:func:`create_demo_app` serves the chat page (``integrations/static/``), the chat
routes over :class:`~feedback_plugin.integrations.demo.agent.ChatAgent`,
``GET /api/chat/history`` (a session's turns rebuilt as the page shows them),
``GET /api/info``, and the REST router of :mod:`~feedback_plugin.integrations.rest`
under ``/api``. ``feedback-plugin serve`` runs it with uvicorn.

Memory is found by words and by meaning when the ``semantic`` extra is installed
(the local model of :func:`feedback_plugin.embeddings.local`, loaded in a thread
as the app starts; by words until it is loaded), unless
``$FEEDBACK_PLUGIN_EMBEDDINGS=off``; by words (BM25) otherwise (:mod:`.memory`).
``GET /api/info`` says which (``memory_search``), and the page shows it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.routing import APIRouter
from fastapi.staticfiles import StaticFiles
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel

from ...embeddings import LocalEmbeddings
from ...errors import ArgumentTypeError, ConfigurationError, InvalidArgumentError
from ...memory.retriever import entry_document, search_memory
from ...models import MAX_ID_LENGTH, SessionQAEntry
from ...ratings import thresholds
from ...store import SessionStore
from ..auth import ApiKeyAuth, guarded_route
from ..guards import (
    AllowedHosts,
    RateLimit,
    SafeJSONResponse,
    allowed_hosts_setting,
    body_limit_setting,
    check_open_mode,
    install_json_errors,
    rate_limit_setting,
)
from ..offline_model import OFFLINE_RESPONDER, OfflineChatModel
from ..rest import closing_store, create_router, store_errors
from ..rest_models import Ratings
from .agent import CHAT_FAILED, ChatAgent, event_lines, found_by
from .content import (
    SUGGESTIONS,
    RecordedMemory,
    calls_tools,
    describe_memory_search,
    describe_model,
    embeddings_from_env,
    help_centre_tool,
    load_documents,
    model_from_env,
    split_memory_text,
)
from .memory import asearch_by_meaning, ready_embeddings
from .models import (
    ChatRequest,
    ChatResponse,
    ChatTurn,
    ContextDoc,
    Info,
    MemorySearchInfo,
    PastMemory,
)

__all__ = ["STATIC_DIR", "create_demo_app"]

log = logging.getLogger("feedback_plugin")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
"""The page and its files, ``feedback-buttons.js`` among them (``integrations/static``)."""

# Page hardening: no inline script, nothing from elsewhere. The UI renders all text
# with textContent anyway; this is the second lock.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_PAGE_PATHS = frozenset({"/", "/favicon.ico"})


# -- history: a turn's sources and memories from its recorded context ---------------------


class _History:
    """Rebuilds what ``POST /api/chat`` answered for the turns of one session."""

    def __init__(
        self,
        store: SessionStore,
        docs: list[Document],
        user: str | None,
        entries: list[SessionQAEntry],
        embeddings: Embeddings | None = None,
    ) -> None:
        self.store = store
        self.user = user
        self.embeddings = embeddings
        self.docs = {d.page_content: d for d in docs}
        # a memory's text is entry_document(...).page_content of the remembered turn
        self.known: dict[str, SessionQAEntry | None] = {
            entry_document(e, 0.0).page_content: e for e in entries
        }

    async def turn(self, entry: SessionQAEntry) -> ChatTurn:
        responder = entry.metadata.get("responder")
        context: list[ContextDoc] = []
        memories: list[PastMemory] = []
        for text in entry.context:
            doc = self.docs.get(text)
            if doc is not None:
                context.append(
                    ContextDoc(id=doc.metadata["id"], title=doc.metadata["title"], text=text)
                )
            elif (memory := split_memory_text(text)) is not None:
                memories.append(await self.memory(memory))
        return ChatTurn(
            qa_id=entry.qa_id,
            session_id=entry.session_id,
            question=entry.question,
            answer=entry.answer,
            responder=responder if isinstance(responder, str) else None,
            offline=responder == OFFLINE_RESPONDER,
            context=context,
            memories=memories,
            feedback_score=entry.feedback_score,
            feedback_text=entry.feedback_text,
            correction=entry.correction,
        )

    async def memory(self, memory: RecordedMemory) -> PastMemory:
        question, answer = memory.question, memory.answer
        text = memory.document_text
        if text not in self.known:
            try:
                hits = await asearch_by_meaning(
                    self.store, question, self.embeddings, k=10, user=self.user
                )
                for found, _relevance in hits:
                    self.known.setdefault(entry_document(found, 0.0).page_content, found)
            except Exception:  # memory is an aid: the history shows without it
                log.warning(
                    "feedback_plugin demo: memory lookup for the history failed", exc_info=True
                )
            self.known.setdefault(text, None)  # looked up once, found or not
        entry = self.known.get(text)
        return PastMemory(
            qa_id=entry.qa_id if entry else None,
            session_id=entry.session_id if entry else None,
            question=question,
            answer=answer,
            feedback_score=entry.feedback_score if entry else None,
            found_by=found_by(memory.found_by),
            similarity=memory.similarity,
        )


# -- the app ----------------------------------------------------------------------------


def _lifespan(
    store: SessionStore, embeddings: Embeddings | None, *, close: bool
) -> Callable[[FastAPI], Any]:
    """Closes ``store`` when the app stops if ``close``; starts loading the local embedding
    model as it starts, in a thread of its own, so the first question does not wait for it
    (memory is found by words until it is loaded). The thread is not a daemon: the
    process waits for the load to end before it exits, rather than stop it mid-import."""
    closing = closing_store(store if close else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if isinstance(embeddings, LocalEmbeddings) and not embeddings.loaded:
            threading.Thread(
                target=_load, args=(embeddings, store), name="feedback_plugin demo: local model"
            ).start()
        async with closing(app):
            yield

    return lifespan


def _load(embeddings: LocalEmbeddings, store: SessionStore) -> None:
    """Load the model, then run one memory query with it: the store's memory starts
    embedding the liked turns in the background (else the first query by meaning would)."""
    started = time.monotonic()
    try:
        embeddings.load()
    except Exception:  # memory stays by words (memory.py: a model not loaded is not used)
        log.warning(
            "feedback_plugin demo: the local embedding model did not load; memory is found "
            "by words",
            exc_info=True,
        )
        return
    log.info(
        "feedback_plugin demo: memory found by meaning from now on (%s loaded in %.1f s)",
        embeddings.model,
        time.monotonic() - started,
    )
    try:
        search_memory(store, "", k=1, embeddings=embeddings)
    except Exception:  # the store may be closed already; the first query does it then
        log.debug("feedback_plugin demo: memory not primed with the model", exc_info=True)


_CHAT_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or unknown API key"},
    403: {"description": "the API key lacks the 'feedback' scope"},
    413: {"description": "the request body is larger than the server's limit"},
    415: {"description": "the body was not sent as JSON"},
    429: {"description": "over the rate limit"},
}

_STREAM_DESCRIPTION = """\
The turn as it happens, one JSON object a line (`application/x-ndjson`):

* `{"type": "qa_id", "qa_id": "…", "session_id": "…"}`: first, before any token
  (from the agent's `custom` stream): the id to rate the answer by;
* `{"type": "token", "text": "…"}`: the next piece of the answer (only the model's
  final answer; tool calls and tool results are not sent);
* `{"type": "reset"}`: the text sent so far was not the answer (the model went on
  to call a tool): clear it;
* last, `{"type": "answer", …}` with the fields of `POST /api/chat`'s answer, or
  `{"type": "error", "detail": "…"}` when the agent failed (nothing is recorded).
"""


def create_demo_app(
    store: SessionStore | None = None,
    *,
    chat_model: BaseChatModel | None = None,
    auth: ApiKeyAuth | None = None,
    allowed_hosts: Sequence[str] | None = None,
    max_body_bytes: int | None = None,
    rate_limit: str | RateLimit | None = None,
    allow_open: bool = False,
    embeddings: Embeddings | Literal["auto"] | None = "auto",
) -> FastAPI:
    """The demo chat app: the chat page, ``POST /api/chat[/stream]`` and the REST router.

    Args:
        store: where turns go; ``None`` opens ``SessionStore()`` (``$FEEDBACK_PLUGIN_DIR``)
            and closes it when the app stops.
        chat_model: the agent's chat model (a LangChain chat model that supports
            tool calling); ``None``: the one named by ``$FEEDBACK_PLUGIN_CHAT_MODEL``,
            else the offline responder (:class:`OfflineChatModel`).
        auth: API keys for every ``/api`` endpoint (``None``: open, for local demos).
        allowed_hosts: the ``Host`` names answered, others get a 400 (default:
            ``localhost``, ``127.0.0.1``, ``::1``; ``"*"`` for any).
        max_body_bytes: the largest request body (default 1 MiB); 413 beyond.
        rate_limit: requests per API key (per client address when open), e.g.
            ``"30/minute"``; ``None``: no limit. Shared by every ``/api`` route.
        allow_open: without ``auth`` the app refuses (:class:`ConfigurationError`)
            to answer non-loopback hosts unless this is true.
        embeddings: how the memories shown to the model are found: ``"auto"``, by
            words and by meaning with the local model
            (:func:`feedback_plugin.embeddings.local`) when the ``semantic`` extra
            is installed and ``$FEEDBACK_PLUGIN_EMBEDDINGS`` is not ``off``, else by
            words; ``None``, by words (BM25); or these LangChain embeddings.

    Raises:
        ConfigurationError: ``chat_model`` cannot call tools, or the open mode is refused.
        ArgumentTypeError, InvalidArgumentError: ``embeddings`` is none of the above.
    """
    hosts = allowed_hosts_setting(allowed_hosts, environ={})
    if auth is None:
        check_open_mode(hosts, allow_open=allow_open)
    body_limit = body_limit_setting(max_body_bytes, {})
    limiter = rate_limit_setting(rate_limit, {})
    docs = load_documents()
    tool = help_centre_tool(docs)
    note: str | None = None
    if chat_model is None:
        chat_model, responder, note = model_from_env(tool)
    else:
        if not calls_tools(chat_model, tool):
            raise ConfigurationError(
                f"the demo's chat model must support tool calling (bind_tools); "
                f"{type(chat_model).__name__} does not"
            )
        responder = describe_model(chat_model)
    offline = chat_model is None
    memory_note: str | None = None
    if isinstance(embeddings, str):
        if embeddings != "auto":
            raise InvalidArgumentError(f"embeddings must be 'auto' as a string, got {embeddings!r}")
        embeddings, memory_note = embeddings_from_env()
    elif embeddings is not None and not isinstance(embeddings, Embeddings):
        raise ArgumentTypeError(
            f"embeddings must be LangChain Embeddings, None or 'auto', "
            f"got {type(embeddings).__name__}"
        )
    memory_search = MemorySearchInfo(
        **describe_memory_search(embeddings)._asdict(), note=memory_note
    )
    own_store = store is None
    the_store = SessionStore() if store is None else store
    agent = ChatAgent(
        the_store,
        OfflineChatModel() if chat_model is None else chat_model,
        tool,
        docs,
        responder,
        offline,
        embeddings,
    )

    from ... import __version__

    app = FastAPI(
        title="feedback_plugin demo chat",
        version=__version__,
        description="A LangChain agent whose answers you rate; the REST API under /api.",
        lifespan=_lifespan(the_store, embeddings, close=own_store),
        default_response_class=SafeJSONResponse,
    )
    install_json_errors(app)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Coroutine[Any, Any, Response]]
    ) -> Response:
        response = await call_next(request)
        path = request.url.path
        if path in _PAGE_PATHS or path.startswith("/static/"):  # not /docs: it uses a CDN
            for header, value in _SECURITY_HEADERS.items():
                response.headers.setdefault(header, value)
        return response

    chat = APIRouter(
        prefix="/api",
        tags=["chat"],
        route_class=guarded_route(auth, max_body_bytes=body_limit, rate_limit=limiter),
        default_response_class=SafeJSONResponse,
    )

    @chat.post(
        "/chat",
        response_model=ChatResponse,
        summary="Ask a question; the answer is recorded as a turn you can rate",
        responses={**_CHAT_ERRORS, 502: {"description": "the agent failed (see the server log)"}},
    )
    async def ask(body: ChatRequest, request: Request) -> dict[str, Any]:
        user: str | None = request.state.user
        answer: dict[str, Any] | None = None
        try:
            async for event in agent.turn(body.session_id, body.question, user):
                if event["type"] == "answer":
                    answer = event
        except Exception as exc:  # the client learns nothing internal; the log has it all
            log.exception("feedback_plugin demo: the chat agent failed")
            raise HTTPException(502, CHAT_FAILED) from exc
        assert answer is not None  # turn() ends with the answer or raises
        del answer["type"]
        return answer

    @chat.post(
        "/chat/stream",
        response_class=StreamingResponse,
        summary="Ask a question; the turn's qa_id, then the answer as it is written (NDJSON)",
        description=_STREAM_DESCRIPTION,
        responses={
            200: {
                "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                "description": "NDJSON events: qa_id, token…, answer (or error)",
            },
            **_CHAT_ERRORS,
        },
    )
    async def ask_stream(body: ChatRequest, request: Request) -> StreamingResponse:
        user: str | None = request.state.user
        return StreamingResponse(
            event_lines(agent.turn(body.session_id, body.question, user)),
            media_type="application/x-ndjson",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @chat.get(
        "/chat/history",
        response_model=list[ChatTurn],
        summary="A session's turns as the page shows them (sources, memories, ratings)",
    )
    async def history(
        request: Request,
        session_id: Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH)],
    ) -> list[ChatTurn]:
        user: str | None = request.state.user
        with store_errors("chat history"):
            entries = await the_store.aget_session(session_id, user=user)
            rebuild = _History(the_store, docs, user, entries, embeddings)
            return [await rebuild.turn(e) for e in entries]

    @app.get("/api/info", response_model=Info, tags=["chat"], summary="Who answers (no auth)")
    async def info() -> Info:
        return Info(
            responder=responder,
            offline=offline,
            note=note,
            auth=auth is not None,
            suggestions=SUGGESTIONS,
            ratings=Ratings(**thresholds()),
            memory_search=memory_search,
        )

    app.include_router(chat)
    app.include_router(
        create_router(
            the_store,
            auth=auth,
            max_body_bytes=body_limit,
            rate_limit=limiter,
            embeddings=None if embeddings is None else ready_embeddings(embeddings),
        )
    )

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    @app.get("/healthz", tags=["health"], summary="Liveness probe (no auth)")
    @app.head("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(AllowedHosts, hosts=hosts)  # outermost: before anything is read
    return app
