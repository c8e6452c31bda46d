"""The demo chat web app: a LangChain chat whose answers carry 👍 / 👎 buttons.

Install with ``pip install "feedback-plugin[web]"`` and run::

    python -m feedback_plugin.integrations.webapp              # http://127.0.0.1:8000
    python -m feedback_plugin.integrations.webapp --port 9000 --store ./my-store

or build the app yourself (``uvicorn --factory
feedback_plugin.integrations.webapp:create_demo_app``).

What it serves:

* ``GET /``: the chat page (``static/index.html``, ``app.js``, ``style.css``;
  no build step, nothing from a CDN). Every answer carries the
  ``<feedback-buttons>`` web component (``static/feedback-buttons.js``, see
  ``docs/web.md``); a side panel lists the session's turns with their ratings
  and the memories used for the selected answer.
* ``POST /api/chat``: ``{"session_id", "question"}`` → ``{"qa_id", "answer",
  "responder", "context": [...], "memories": [...]}``.
* ``GET /api/chat/history?session_id=...``: the session's turns in that same
  shape (sources and memories rebuilt from each turn's recorded context), plus
  their ratings: what the page shows after a reload.
* ``GET /api/info``: which responder answers, whether an API key is needed.
* Everything of :func:`~feedback_plugin.integrations.rest.create_router`
  (turns, feedback, sessions, memory search) under ``/api``.

The chat is one LangChain chain, recorded by
:class:`~feedback_plugin.FeedbackCallbackHandler` (``metadata={"session_id":
...}``; the app passes its own ``run_id``, so it knows the turn's ``qa_id``)::

    {"question"} ─▶ assign(docs=help-centre retriever, memories=PositiveMemoryRetriever)
                 ─▶ assign(answer=responder)

The responder is the chat model named by ``$FEEDBACK_PLUGIN_CHAT_MODEL`` (for
example ``openai:gpt-4o-mini``, through ``langchain.chat_models.init_chat_model``,
which needs the ``langchain`` package and the provider's package and key),
or, when none is configured, the built-in *offline responder*: it answers
with the best matching help-centre article's reply, or with a liked
(or corrected) earlier answer to the same question. The page labels it as such.

The documents are six help-centre articles of "Acme Notes", a fictional
note-taking app, shipped as package data (``integrations/data/docs.json``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
import uuid
from collections.abc import Callable, Coroutine, Sequence
from importlib import resources
from operator import itemgetter
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from fastapi.routing import APIRouter
from fastapi.staticfiles import StaticFiles
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from ..capture.handler import FeedbackCallbackHandler
from ..errors import ConfigurationError
from ..memory.retriever import PositiveMemoryRetriever, entry_document, search_memory
from ..models import MAX_ID_LENGTH, SessionQAEntry
from ..store import SessionStore
from .guards import (
    ENV_ALLOW_OPEN,
    ENV_ALLOWED_HOSTS,
    ENV_MAX_BODY_BYTES,
    ENV_RATE_LIMIT,
    AllowedHosts,
    RateLimit,
    SafeJSONResponse,
    allowed_hosts_setting,
    body_limit_setting,
    check_open_mode,
    install_json_errors,
    is_loopback,
    rate_limit_setting,
)
from .rest import ApiKeyAuth, _store_errors, closing_store, create_router, guarded_route

__all__ = ["OFFLINE_RESPONDER", "create_demo_app", "load_documents", "main"]

log = logging.getLogger("feedback_plugin")

ENV_CHAT_MODEL = "FEEDBACK_PLUGIN_CHAT_MODEL"
OFFLINE_RESPONDER = "offline responder"
"""The responder label of the built-in, no-LLM responder."""

STATIC_DIR = Path(__file__).resolve().parent / "static"
MEMORY_K = 3
DOCS_K = 2
MAX_QUESTION = 4000
"""The longest chat question, in characters (the page's input allows as many)."""
CHAT_FAILED = "the chat model could not answer; the details are in the server log"
REUSE_SIMILARITY = 0.5
"""The offline responder reuses a remembered answer when the questions share this
fraction of their content words (Jaccard)."""

NO_ANSWER = (
    "I couldn't find that in the Acme Notes help centre. Try rephrasing, or ask about "
    "passwords, invoices, exporting, working offline, sharing or deleting your account."
)
SUGGESTIONS = [
    "How do I reset my password?",
    "Where can I download my invoices?",
    "Can I export my notes as a PDF?",
    "Does the app work offline?",
]

_STOPWORDS_TEXT = """
a an and are as at be by can do does for from how i if in is it me my of on or our so that
the their there this to up we what when where which who why will with you your
"""
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())

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


# -- documents and retrieval ----------------------------------------------------------


def load_documents() -> list[Document]:
    """The bundled help-centre articles: text, and ``id`` / ``title`` / ``reply`` metadata."""
    raw = json.loads(
        (resources.files("feedback_plugin.integrations") / "data" / "docs.json").read_text(
            encoding="utf-8"
        )
    )
    return [
        Document(
            page_content=f"{d['title']}. {d['text']}",
            metadata={"id": d["id"], "title": d["title"], "reply": d["answer"]},
        )
        for d in raw
    ]


def _words(text: str) -> set[str]:
    """Lower-case content words, with a crude plural fold ("invoices" ~ "invoice")."""
    out = set()
    for w in re.findall(r"[a-z0-9]+", text.lower()):
        if w in _STOPWORDS or len(w) < 2:
            continue
        out.add(w[:-1] if len(w) > 3 and w.endswith("s") else w)
    return out


def _similarity(a: str, b: str) -> float:
    wa, wb = _words(a), _words(b)
    return len(wa & wb) / len(wa | wb) if wa and wb else 0.0


class HelpCentreRetriever(BaseRetriever):
    """Ranks the bundled articles by the content words they share with the query.

    Enough for six documents; a real app uses a vector store here.
    """

    docs: list[Document]
    k: int = DOCS_K

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        q = _words(query)
        scored = [(len(q & _words(d.page_content)), i, d) for i, d in enumerate(self.docs)]
        scored = [s for s in scored if s[0] > 0]
        scored.sort(key=lambda s: (-s[0], s[1]))
        return [d for _, _, d in scored[: self.k]]


# -- responders -------------------------------------------------------------------


def _offline_answer(inputs: dict[str, Any]) -> str:
    """Answer from what was retrieved, no LLM: a remembered (liked or corrected) answer to
    the same question, else the best article's reply, else a polite "not found".

    The answer is the reply text alone; the page shows its sources and memories beside it.
    """
    question: str = inputs["question"]
    for memory in inputs.get("memories", []):
        if _similarity(question, memory.metadata["question"]) >= REUSE_SIMILARITY:
            return str(memory.metadata["answer"])
    docs: list[Document] = inputs.get("docs", [])
    return str(docs[0].metadata["reply"]) if docs else NO_ANSWER


_PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "You are the support assistant of Acme Notes, a note-taking app. Answer the "
            "question briefly and only from the help-centre articles below. If they do not "
            "cover it, say so.\n\nHelp-centre articles:\n{context}\n\n"
            "Answers this user liked before (follow them when the question matches; a "
            "corrected answer is the right one):\n{liked}",
        ),
        ("human", "{question}"),
    ]
)


def _format_docs(inputs: dict[str, Any]) -> str:
    docs: list[Document] = inputs["docs"]
    if not docs:
        return "(no matching article)"
    return "\n\n".join(f"[{d.metadata['id']}] {d.page_content}" for d in docs)


def _format_memories(inputs: dict[str, Any]) -> str:
    memories: list[Document] = inputs["memories"]
    return "\n\n".join(m.page_content for m in memories) or "(none yet)"


def _model_responder(model: Runnable[Any, Any]) -> Runnable[dict[str, Any], str]:
    return (
        {
            "context": RunnableLambda(_format_docs),
            "liked": RunnableLambda(_format_memories),
            "question": itemgetter("question"),
        }
        | _PROMPT
        | model
        | StrOutputParser()
    )


def _describe(model: Any) -> str:
    for attr in ("model_name", "model"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return getattr(model, "name", None) or type(model).__name__


def _model_from_env() -> tuple[Runnable[Any, Any] | None, str, str | None]:
    """(model, its label, a note on why it is not used) from ``$FEEDBACK_PLUGIN_CHAT_MODEL``."""
    name = os.environ.get(ENV_CHAT_MODEL, "").strip()
    if not name:
        return None, OFFLINE_RESPONDER, None
    try:
        init_chat_model = importlib.import_module("langchain.chat_models").init_chat_model
    except (ImportError, AttributeError):
        note = (
            f"{ENV_CHAT_MODEL}={name!r} is set, but the 'langchain' package is not installed "
            "(pip install langchain plus the provider's package); using the offline responder"
        )
        log.warning("feedback_plugin demo: %s", note)
        return None, OFFLINE_RESPONDER, note
    try:
        model: Runnable[Any, Any] = init_chat_model(name)
    except Exception as exc:
        note = f"cannot start chat model {name!r} ({type(exc).__name__}: {exc}); "
        note += "using the offline responder"
        log.warning("feedback_plugin demo: %s", note)
        return None, OFFLINE_RESPONDER, note
    return model, name, None


# -- API models -----------------------------------------------------------------------


class ChatRequest(BaseModel):
    """One question in a session.

    The checks are validators rather than pydantic string constraints, which
    refuse text UTF-8 cannot carry (lone surrogates): such text is accepted
    and stored escaped, like everywhere else.
    """

    model_config = ConfigDict(extra="forbid")

    session_id: Annotated[
        str, WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH})
    ] = Field(description="the chat session (any non-empty string)")
    question: Annotated[
        str, WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_QUESTION})
    ] = Field(description="what the user asked (surrounding whitespace is dropped)")

    @field_validator("session_id")
    @classmethod
    def _session_id(cls, value: str) -> str:
        if not value or len(value) > MAX_ID_LENGTH:
            raise ValueError(f"session_id must have 1 to {MAX_ID_LENGTH} characters")
        return value

    @field_validator("question")
    @classmethod
    def _question(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > MAX_QUESTION:
            raise ValueError(f"question must have 1 to {MAX_QUESTION} characters besides spaces")
        return value


class ContextDoc(BaseModel):
    """A help-centre article the answer was based on."""

    id: str
    title: str
    text: str


class Memory(BaseModel):
    """A liked (or corrected) earlier turn handed to the responder."""

    qa_id: str
    session_id: str
    question: str
    answer: str = Field(description="the corrected answer when one was given, else the answer")
    feedback_score: int | None
    relevance: float


class ChatResponse(BaseModel):
    """The answer, the id to rate it by, and what it was built from."""

    qa_id: str = Field(
        description="the recorded turn's id (rate it with PUT /api/turns/{qa_id}/feedback)"
    )
    session_id: str
    question: str
    answer: str
    responder: str = Field(description=f"the chat model's name, or {OFFLINE_RESPONDER!r}")
    offline: bool = Field(description="true when the built-in offline responder answered")
    recorded: bool = Field(description="whether the turn is in the store (so it can be rated)")
    context: list[ContextDoc]
    memories: list[Memory]


class PastMemory(BaseModel):
    """A memory an earlier answer used, rebuilt from the turn's recorded context.

    ``qa_id``, ``session_id`` and ``feedback_score`` (the remembered turn's
    rating now) are ``None`` when that turn is no longer in the caller's memory.
    """

    qa_id: str | None
    session_id: str | None
    question: str
    answer: str
    feedback_score: int | None


class ChatTurn(BaseModel):
    """A recorded turn as the page shows it: what ``POST /api/chat`` said, and its rating."""

    qa_id: str
    session_id: str
    question: str
    answer: str
    responder: str | None
    offline: bool
    recorded: bool = True
    context: list[ContextDoc]
    memories: list[PastMemory]
    feedback_score: int | None
    feedback_text: str | None
    correction: str | None


class Info(BaseModel):
    responder: str
    offline: bool
    note: str | None = Field(description="why a configured chat model is not used, if it is not")
    auth: bool = Field(description="whether the API wants `Authorization: Bearer <key>`")
    suggestions: list[str]


# -- history: a turn's sources and memories from its recorded context ---------------------

_MEMORY_PREFIX = "Question: "
_MEMORY_ANSWER = "\nAnswer: "


class _History:
    """Rebuilds what ``POST /api/chat`` answered for the turns of one session."""

    def __init__(
        self,
        store: SessionStore,
        docs: list[Document],
        user: str | None,
        entries: list[SessionQAEntry],
    ) -> None:
        self.store = store
        self.user = user
        self.docs = {d.page_content: d for d in docs}
        # a memory's text is entry_document(...).page_content of the remembered turn
        self.known: dict[str, SessionQAEntry | None] = {
            entry_document(e, 0.0).page_content: e for e in entries
        }

    def turn(self, entry: SessionQAEntry) -> ChatTurn:
        responder = entry.metadata.get("responder")
        context: list[ContextDoc] = []
        memories: list[PastMemory] = []
        for text in entry.context:
            doc = self.docs.get(text)
            if doc is not None:
                context.append(
                    ContextDoc(id=doc.metadata["id"], title=doc.metadata["title"], text=text)
                )
            elif text.startswith(_MEMORY_PREFIX) and _MEMORY_ANSWER in text:
                memories.append(self.memory(text))
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

    def memory(self, text: str) -> PastMemory:
        question, _, answer = text[len(_MEMORY_PREFIX) :].partition(_MEMORY_ANSWER)
        if text not in self.known:
            self.known[text] = None
            try:
                for found, _relevance in search_memory(self.store, question, k=10, user=self.user):
                    self.known.setdefault(entry_document(found, 0.0).page_content, found)
            except Exception:  # memory is an aid: the history shows without it
                log.warning(
                    "feedback_plugin demo: memory lookup for the history failed", exc_info=True
                )
        entry = self.known.get(text)
        return PastMemory(
            qa_id=entry.qa_id if entry else None,
            session_id=entry.session_id if entry else None,
            question=question,
            answer=answer,
            feedback_score=entry.feedback_score if entry else None,
        )


# -- the app ----------------------------------------------------------------------------


def create_demo_app(
    store: SessionStore | None = None,
    *,
    chat_model: Runnable[Any, Any] | None = None,
    auth: ApiKeyAuth | None = None,
    allowed_hosts: Sequence[str] | None = None,
    max_body_bytes: int | None = None,
    rate_limit: str | RateLimit | None = None,
    allow_open: bool = False,
) -> FastAPI:
    """The demo chat app: the chat page, ``POST /api/chat`` and the REST router.

    Args:
        store: where turns go; ``None`` opens ``SessionStore()`` (``$FEEDBACK_PLUGIN_DIR``)
            and closes it when the app stops.
        chat_model: the chat model (any runnable taking a prompt, e.g. a LangChain
            chat model); ``None``: the one named by ``$FEEDBACK_PLUGIN_CHAT_MODEL``,
            else the offline responder.
        auth: API keys for every ``/api`` endpoint (``None``: open, for local demos).
        allowed_hosts: the ``Host`` names answered, others get a 400 (default:
            ``localhost``, ``127.0.0.1``, ``::1``; ``"*"`` for any).
        max_body_bytes: the largest request body (default 1 MiB); 413 beyond.
        rate_limit: requests per API key (per client address when open), e.g.
            ``"30/minute"``; ``None``: no limit. Shared by every ``/api`` route.
        allow_open: without ``auth`` the app refuses (:class:`ConfigurationError`)
            to answer non-loopback hosts unless this is true.
    """
    hosts = allowed_hosts_setting(allowed_hosts, environ={})
    if auth is None:
        check_open_mode(hosts, allow_open=allow_open)
    body_limit = body_limit_setting(max_body_bytes, {})
    limiter = rate_limit_setting(rate_limit, {})
    own_store = store is None
    the_store = SessionStore() if store is None else store
    note: str | None = None
    if chat_model is None:
        chat_model, responder, note = _model_from_env()
    else:
        responder = _describe(chat_model)
    offline = chat_model is None
    answer_step: Runnable[dict[str, Any], str] = (
        RunnableLambda(_offline_answer, name="OfflineResponder")
        if chat_model is None
        else _model_responder(chat_model)
    )
    docs = load_documents()
    handler = FeedbackCallbackHandler(the_store)

    def chain_for(user: str | None) -> Runnable[dict[str, Any], dict[str, Any]]:
        help_centre = HelpCentreRetriever(docs=docs)
        memory = PositiveMemoryRetriever(store=the_store, k=MEMORY_K, user=user)
        return (
            RunnablePassthrough.assign(
                docs=itemgetter("question") | help_centre,
                memories=itemgetter("question") | memory,
            )
            | RunnablePassthrough.assign(answer=answer_step)
        ).with_config(run_name="demo_chat")

    from .. import __version__

    app = FastAPI(
        title="feedback_plugin demo chat",
        version=__version__,
        description="A LangChain chat whose answers you rate; the REST API under /api.",
        lifespan=closing_store(the_store if own_store else None),
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
        responses={
            401: {"description": "missing or unknown API key"},
            403: {"description": "the API key lacks the 'feedback' scope"},
            413: {"description": "the request body is larger than the server's limit"},
            415: {"description": "the body was not sent as JSON"},
            502: {"description": "the chat model failed (details in the server log)"},
        },
    )
    def ask(body: ChatRequest, request: Request) -> ChatResponse:
        user: str | None = request.state.user
        run_id = uuid.uuid4()
        metadata: dict[str, Any] = {"session_id": body.session_id, "app": "demo web app"}
        metadata["responder"] = responder
        if user is not None:
            metadata["user_id"] = user
        try:
            out = chain_for(user).invoke(
                {"question": body.question},
                config={"callbacks": [handler], "metadata": metadata, "run_id": run_id},
            )
        except Exception as exc:  # the client learns nothing internal; the log has it all
            log.exception("feedback_plugin demo: the chat chain failed")
            raise HTTPException(502, CHAT_FAILED) from exc
        qa_id = str(run_id)
        try:  # read-your-writes: the turn is rateable the moment the answer is shown
            recorded = the_store.get_entry(body.session_id, qa_id, user=user) is not None
        except Exception:
            log.exception("feedback_plugin demo: cannot read back turn %s", qa_id)
            recorded = False
        return ChatResponse(
            qa_id=qa_id,
            session_id=body.session_id,
            question=body.question,
            answer=str(out["answer"]),
            responder=responder,
            offline=offline,
            recorded=recorded,
            context=[
                ContextDoc(id=d.metadata["id"], title=d.metadata["title"], text=d.page_content)
                for d in out["docs"]
            ],
            memories=[
                Memory(
                    qa_id=m.metadata["qa_id"],
                    session_id=m.metadata["session_id"],
                    question=m.metadata["question"],
                    answer=m.metadata["answer"],
                    feedback_score=m.metadata["feedback_score"],
                    relevance=m.metadata["relevance"],
                )
                for m in out["memories"]
            ],
        )

    @chat.get(
        "/chat/history",
        response_model=list[ChatTurn],
        summary="A session's turns as the page shows them (sources, memories, ratings)",
    )
    def history(
        request: Request,
        session_id: Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH)],
    ) -> list[ChatTurn]:
        user: str | None = request.state.user
        with _store_errors("chat history"):
            entries = the_store.get_session(session_id, user=user)
            rebuild = _History(the_store, docs, user, entries)
            return [rebuild.turn(e) for e in entries]

    @app.get("/api/info", response_model=Info, tags=["chat"], summary="Who answers (no auth)")
    def info() -> Info:
        return Info(
            responder=responder,
            offline=offline,
            note=note,
            auth=auth is not None,
            suggestions=SUGGESTIONS,
        )

    app.include_router(chat)
    app.include_router(
        create_router(the_store, auth=auth, max_body_bytes=body_limit, rate_limit=limiter)
    )

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    @app.get("/healthz", tags=["health"], summary="Liveness probe (no auth)")
    @app.head("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(AllowedHosts, hosts=hosts)  # outermost: before anything is read
    return app


# -- command line ---------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo chat with uvicorn (``python -m feedback_plugin.integrations.webapp``)."""
    parser = argparse.ArgumentParser(
        prog="python -m feedback_plugin.integrations.webapp",
        description="The feedback_plugin demo chat: a web page whose answers you rate 👍 / 👎.",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("FEEDBACK_PLUGIN_HOST", "127.0.0.1"),
        help="interface to listen on (default: $FEEDBACK_PLUGIN_HOST, else 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("FEEDBACK_PLUGIN_PORT", "8000")),
        help="port (default: $FEEDBACK_PLUGIN_PORT, else 8000)",
    )
    parser.add_argument(
        "--store",
        metavar="DIR",
        help="store directory or redis:// URL (default: $FEEDBACK_PLUGIN_DIR, else the "
        "per-user data directory)",
    )
    parser.add_argument(
        "--allowed-hosts",
        metavar="H1,H2",
        default=os.environ.get(ENV_ALLOWED_HOSTS),
        help=f"Host names the app answers to, comma-separated ('*.example.com', '*'; default: "
        f"${ENV_ALLOWED_HOSTS}, else the --host plus localhost / 127.0.0.1 / ::1 for a loopback "
        "host, or this machine's names for 0.0.0.0)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        metavar="N",
        default=os.environ.get(ENV_MAX_BODY_BYTES) or None,
        help=f"largest request body (default: ${ENV_MAX_BODY_BYTES}, else 1048576)",
    )
    parser.add_argument(
        "--rate-limit",
        metavar="RATE",
        default=os.environ.get(ENV_RATE_LIMIT) or None,
        help=f"requests per API key, e.g. 30/minute (default: ${ENV_RATE_LIMIT}, else none; "
        "needs feedback-plugin[ratelimit])",
    )
    parser.add_argument(
        "--allow-open",
        action="store_true",
        default=os.environ.get(ENV_ALLOW_OPEN, "").strip().lower() in ("1", "true", "yes"),
        help=f"serve without API keys on a non-loopback host (or ${ENV_ALLOW_OPEN}=1): "
        "anyone who reaches it reads and rates every turn",
    )
    args = parser.parse_args(argv)

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    auth = ApiKeyAuth.from_env()
    hosts = None
    if args.allowed_hosts is not None:
        hosts = [h for h in args.allowed_hosts.split(",") if h.strip()]
    try:
        hosts = allowed_hosts_setting(hosts, bind_host=args.host, environ={})
        if auth is None and not is_loopback(args.host):
            check_open_mode([args.host, *hosts], allow_open=args.allow_open)
            log.warning(
                "feedback_plugin demo: listening on %s without API keys (--allow-open): "
                "anyone on the network can read and rate the turns.",
                args.host,
            )
        store = SessionStore(args.store)
        app = create_demo_app(
            store,
            auth=auth,
            allowed_hosts=hosts,
            max_body_bytes=args.max_body_bytes,
            rate_limit=args.rate_limit,
            allow_open=args.allow_open or is_loopback(args.host),
        )
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"feedback_plugin demo chat: http://{shown}:{args.port}/  (store: {store.location})")
    print(f"Answers to Host names: {', '.join(hosts)}")
    print("Ctrl+C stops it.", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    except SystemExit as exc:  # uvicorn exits when it cannot start (port in use, ...)
        print(
            f"error: the server did not start on {shown}:{args.port} (see above)", file=sys.stderr
        )
        return exc.code if isinstance(exc.code, int) and exc.code else 1
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
