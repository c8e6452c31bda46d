"""The demo chat web app: a LangChain agent whose answers carry 👍 / 👎 buttons.

Install with ``pip install "feedback-plugin[web,agents]"`` and run::

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
* ``POST /api/chat/stream``: ``{"session_id", "question"}`` → NDJSON events,
  one JSON object a line: ``{"type": "qa_id", "qa_id", "session_id"}`` first
  (before any token: the page puts the thumbs under the answer at once), then
  ``{"type": "token", "text"}`` for the answer's pieces (``{"type": "reset"}``
  when text already sent turns out to precede a tool call, so it was no
  answer), and last ``{"type": "answer", ...}`` with the fields of
  ``POST /api/chat``'s answer, or ``{"type": "error", "detail"}``.
* ``POST /api/chat``: the same turn in one JSON answer: ``{"qa_id", "answer",
  "responder", "offline", "recorded", "context": [...], "memories": [...]}``.
* ``GET /api/chat/history?session_id=...``: the session's turns in that same
  shape (sources and memories rebuilt from each turn's recorded context), plus
  their ratings: what the page shows after a reload.
* ``GET /api/info``: which responder answers, whether an API key is needed.
* Everything of :func:`~feedback_plugin.integrations.rest.create_router`
  (turns, feedback, sessions, memory search) under ``/api``.

The chat is a LangChain v1 agent, recorded by
:class:`~feedback_plugin.middleware.FeedbackMiddleware` (no callback handler)::

    create_agent(model, tools=[search_help_centre],        # a retriever tool
                 middleware=[FeedbackMiddleware(store, k=3), MemoriesAsContext()],
                 checkpointer=InMemorySaver())
    agent.astream({"messages": [question]},
                  {"configurable": {"thread_id": ..., "user_id": <the API key's user>},
                   "metadata": {"session_id": ..., "responder": ...}},
                  stream_mode=["custom", "messages"])

The middleware names the turn (its ``qa_id`` arrives on the ``custom`` stream
before the model speaks), puts the user's liked turns that match the question
into the model's system message, and records the turn when the model answers:
question, final answer, and as context the articles the tool retrieved plus
the liked turns the model was shown (the app's second middleware adds those,
so a reload can show them). The conversation of each session is kept by the
checkpointer (in memory, bounded) so a real model sees the earlier turns.

The model is the chat model named by ``$FEEDBACK_PLUGIN_CHAT_MODEL`` (for
example ``openai:gpt-4o-mini``, through ``langchain.chat_models.init_chat_model``;
it needs the provider's package and key, and must support tool calling), or,
when none is configured, the built-in *offline responder*,
:class:`~feedback_plugin.integrations.offline_model.OfflineChatModel`: it
calls the help-centre tool, then answers with a liked (or corrected) earlier
answer to the same question from its system message, else with the best
article's reply. The page labels it as such.

The documents are six help-centre articles of "Acme Notes", a fictional
note-taking app, shipped as package data (``integrations/data/docs.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.routing import APIRouter
from fastapi.staticfiles import StaticFiles
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.prompts import PromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, create_retriever_tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from ..errors import (
    ConfigurationError,
    FeedbackPluginError,
    InvalidArgumentError,
    InvalidIdError,
)
from ..memory.retriever import entry_document, search_memory
from ..middleware import FeedbackMiddleware, FeedbackState
from ..models import MAX_ID_LENGTH, SessionQAEntry
from ..ratings import POSITIVE_MIN_SCORE, thresholds
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
from .offline_model import (
    HELP_TOOL,
    NO_ANSWER,
    OFFLINE_RESPONDER,
    REPLY_PREFIX,
    LikedAnswer,
    OfflineChatModel,
    content_words,
    parse_liked_answers,
)
from .rest import (
    ApiKeyAuth,
    Ratings,
    _store_errors,
    closing_store,
    create_router,
    guarded_route,
)

__all__ = [
    "NO_ANSWER",
    "OFFLINE_RESPONDER",
    "HelpCentreRetriever",
    "create_demo_app",
    "help_centre_tool",
    "load_documents",
    "main",
]

log = logging.getLogger("feedback_plugin")

ENV_CHAT_MODEL = "FEEDBACK_PLUGIN_CHAT_MODEL"

STATIC_DIR = Path(__file__).resolve().parent / "static"
MEMORY_K = 3
"""How many liked turns a model call is shown at most."""
MEMORY_MIN_SCORE = POSITIVE_MIN_SCORE
"""The lowest score that makes a turn a memory (a correction always does)."""
DOCS_K = 2
MAX_QUESTION = 4000
"""The longest chat question, in characters (the page's input allows as many)."""
CHAT_FAILED = "the chat model could not answer; the details are in the server log"
MAX_THREADS = 200
"""Sessions whose conversation the agent's checkpointer keeps (the least recent go first)."""
MAX_THREAD_TURNS = 10
"""Turns a session's conversation holds before the model starts it afresh (the store keeps all)."""

SYSTEM_PROMPT = (
    "You are the support assistant of Acme Notes, a note-taking app. Look every question "
    f"up with the {HELP_TOOL} tool, then answer briefly and only from the articles it "
    "returns (each has a suggested reply). If they do not cover the question, say so."
)

SUGGESTIONS = [
    "How do I reset my password?",
    "Where can I download my invoices?",
    "Can I export my notes as a PDF?",
    "Does the app work offline?",
]

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


class ChatTurnError(FeedbackPluginError, RuntimeError):
    """The agent ended a turn without an answer (the client gets a generic error)."""


class HelpCentreRetriever(BaseRetriever):
    """Ranks the bundled articles by the content words they share with the query.

    Enough for six documents; a real app uses a vector store here.
    """

    docs: list[Document]
    k: int = DOCS_K

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        q = content_words(query)
        scored = [(len(q & content_words(d.page_content)), i, d) for i, d in enumerate(self.docs)]
        scored = [s for s in scored if s[0] > 0]
        scored.sort(key=lambda s: (-s[0], s[1]))
        return [d for _, _, d in scored[: self.k]]


def help_centre_tool(docs: list[Document] | None = None) -> BaseTool:
    """The agent's retriever tool over the help centre (``docs``: the bundled articles).

    Each article comes back as ``[id] title. text`` and a ``Suggested reply:``
    line (what :class:`OfflineChatModel` answers with). FeedbackMiddleware
    records the retrieved documents as the turn's context.
    """
    return create_retriever_tool(
        HelpCentreRetriever(docs=load_documents() if docs is None else docs),
        HELP_TOOL,
        "Search the Acme Notes help centre. Input: the user's question. Returns the "
        "matching articles, each with a suggested reply.",
        document_prompt=PromptTemplate.from_template(
            "[{id}] {page_content}\n" + REPLY_PREFIX + "{reply}"
        ),
    )


# -- the model --------------------------------------------------------------------------


def _describe(model: Any) -> str:
    for attr in ("model_name", "model"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return getattr(model, "name", None) or type(model).__name__


def _calls_tools(model: BaseChatModel, tool: BaseTool) -> bool:
    """Whether ``model`` supports tool calling (``bind_tools``), as the agent needs."""
    try:
        model.bind_tools([tool])
    except NotImplementedError:
        return False
    return True


def _model_from_env(tool: BaseTool) -> tuple[BaseChatModel | None, str, str | None]:
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
        model: BaseChatModel = init_chat_model(name)
    except Exception as exc:
        note = f"cannot start chat model {name!r} ({type(exc).__name__}: {exc}); "
        note += "using the offline responder"
        log.warning("feedback_plugin demo: %s", note)
        return None, OFFLINE_RESPONDER, note
    if not _calls_tools(model, tool):
        note = f"chat model {name!r} cannot call tools; using the offline responder"
        log.warning("feedback_plugin demo: %s", note)
        return None, OFFLINE_RESPONDER, note
    return model, name, None


# -- the agent ----------------------------------------------------------------------------


def _memory_text(liked: LikedAnswer) -> str:
    """A liked turn as recorded context: ``entry_document(...).page_content`` of that turn."""
    return f"{_MEMORY_PREFIX}{liked.question}{_MEMORY_ANSWER}{liked.answer}"


class MemoriesAsContext(AgentMiddleware[FeedbackState, Any, Any]):
    """Adds the liked turns the model is shown to the turn's recorded context.

    Listed after :class:`FeedbackMiddleware`. That middleware puts the turn's
    liked turns (its ``<liked_answers>`` block) in the state at the turn's
    first model call and records the turn at the call that answers, with the
    documents the turn gathered as context. Before every later model call of
    the turn this adds those liked turns to the gathered documents, as
    ``Question: ...\nAnswer: ...`` (what
    :func:`~feedback_plugin.memory.retriever.entry_document` writes), so
    ``GET /api/chat/history`` can show which memories an answer used. (A
    model that answers at its first call, without a tool, has gathered
    nothing: its turn is recorded with no context.)
    """

    state_schema = FeedbackState

    def before_model(self, state: FeedbackState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        messages = state.get("messages") or []
        newest = max((i for i, m in enumerate(messages) if m.type == "human"), default=-1)
        if not any(m.type == "ai" for m in messages[newest + 1 :]):
            return None  # the turn's first call: its memories are not chosen yet
        block = state.get("feedback_memory")
        shown = parse_liked_answers(block) if isinstance(block, str) else []
        have = state.get("feedback_context") or []
        missing = [text for text in map(_memory_text, shown) if text not in have]
        return {"feedback_context": missing} if missing else None

    async def abefore_model(
        self, state: FeedbackState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        return self.before_model(state, runtime)


class _Threads:
    """The checkpointer's conversations, bounded: :data:`MAX_THREADS` sessions of at
    most :data:`MAX_THREAD_TURNS` turns (then that session's conversation starts afresh)."""

    def __init__(self, checkpointer: InMemorySaver) -> None:
        self.checkpointer = checkpointer
        self.turns: OrderedDict[str, int] = OrderedDict()
        self.locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def lock(self, thread: str) -> asyncio.Lock:
        """The lock that lets one turn at a time run on ``thread``."""
        found = self.locks.get(thread)
        if found is None:
            found = self.locks[thread] = asyncio.Lock()
        return found

    def start(self, thread: str) -> None:
        """Count a turn on ``thread``; drop what the bounds leave out."""
        turns = self.turns.pop(thread, 0)
        if turns >= MAX_THREAD_TURNS:
            self.checkpointer.delete_thread(thread)
            turns = 0
        self.turns[thread] = turns + 1
        while len(self.turns) > MAX_THREADS:
            oldest, _ = self.turns.popitem(last=False)
            self.checkpointer.delete_thread(oldest)

    def forget(self, thread: str) -> None:
        """Drop ``thread``'s conversation (a failed turn may have left it half done)."""
        self.turns.pop(thread, None)
        self.checkpointer.delete_thread(thread)


class _ChatAgent:
    """The demo's agent and how one chat turn runs on it (streamed as events)."""

    def __init__(
        self,
        store: SessionStore,
        model: BaseChatModel,
        tool: BaseTool,
        docs: list[Document],
        responder: str,
        offline: bool,
    ) -> None:
        self.store = store
        self.responder = responder
        self.offline = offline
        self.docs = {d.page_content: d for d in docs}
        checkpointer = InMemorySaver()
        self.threads = _Threads(checkpointer)
        self.running: set[asyncio.Task[None]] = set()
        self.agent = create_agent(
            model,
            tools=[tool],
            system_prompt=SYSTEM_PROMPT,
            middleware=[
                FeedbackMiddleware(store, k=MEMORY_K, min_score=MEMORY_MIN_SCORE),
                MemoriesAsContext(),
            ],
            checkpointer=checkpointer,
            name="demo_chat",
        )

    async def turn(
        self, session_id: str, question: str, user: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        """Run one turn: yield the ``qa_id`` event, ``token`` / ``reset`` events, the answer.

        Raises whatever the agent raised (after dropping the session's half-done
        conversation); the turn is then not recorded. The agent runs in a task
        of its own: a client that goes away mid-answer (so this generator is
        never finished) leaves the turn to complete, recorded, and the
        session free for the next one.
        """
        queue: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue()

        async def run() -> None:
            try:
                async for event in self._events(session_id, question, user):
                    queue.put_nowait(event)
            except asyncio.CancelledError:
                queue.put_nowait(RuntimeError("the chat turn was cancelled"))
                raise
            except Exception as exc:
                queue.put_nowait(exc)
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(run(), name=f"demo chat turn in {session_id!r}")
        self.running.add(task)  # a strong reference until it is done
        task.add_done_callback(self.running.discard)
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    async def _events(
        self, session_id: str, question: str, user: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of one turn, run on the session's conversation (one turn at a time)."""
        thread = json.dumps([user, session_id])  # users never share a conversation
        config: RunnableConfig = {
            "configurable": {"thread_id": thread, "user_id": user},
            "metadata": {
                "session_id": session_id,
                "app": "demo web app",
                "responder": self.responder,
            },
        }
        seen = _TurnUpdates()
        async with self.threads.lock(thread):
            self.threads.start(thread)
            try:
                held: list[dict[str, Any]] = []  # tokens before the qa_id (none in practice)
                spoke: set[str | None] = set()  # model messages whose text was sent
                inputs: Any = {"messages": [HumanMessage(question)]}
                modes: Any = ["custom", "messages", "updates"]
                async for mode, data in self.agent.astream(inputs, config, stream_mode=modes):
                    named = seen.qa_id is None
                    if mode == "custom" and isinstance(data, dict):
                        seen.name(data.get("feedback_qa_id"))
                    elif mode == "updates" and isinstance(data, dict):
                        seen.add(data)
                    elif mode == "messages":
                        event = _token_event(data, spoke)
                        if event is not None:
                            held.append(event)
                    if seen.qa_id is None:
                        continue
                    if named:
                        yield {"type": "qa_id", "qa_id": seen.qa_id, "session_id": session_id}
                    for event in held:
                        yield event
                    held.clear()
            except BaseException:
                self.threads.forget(thread)
                raise
        yield {"type": "answer", **(await self._answer(seen, session_id, question, user))}

    async def _answer(
        self, seen: _TurnUpdates, session_id: str, question: str, user: str | None
    ) -> dict[str, Any]:
        """The ``POST /api/chat`` answer of the turn the agent made of ``seen``."""
        qa_id, answer = seen.qa_id, seen.answer
        if qa_id is None or answer is None:
            raise ChatTurnError("the agent ended the turn without an answer or a qa_id")
        shown = parse_liked_answers(seen.memory)
        memories, recorded = await run_in_threadpool(
            self._read_back, session_id, qa_id, question, shown, user
        )
        reply = ChatResponse(
            qa_id=qa_id,
            session_id=session_id,
            question=question,
            answer=answer,
            responder=self.responder,
            offline=self.offline,
            recorded=recorded,
            context=[
                ContextDoc(id=d.metadata["id"], title=d.metadata["title"], text=d.page_content)
                for d in (self.docs.get(text) for text in seen.gathered)
                if d is not None
            ],
            memories=memories,
        )
        return reply.model_dump(mode="json")

    def _read_back(
        self,
        session_id: str,
        qa_id: str,
        question: str,
        shown: list[LikedAnswer],
        user: str | None,
    ) -> tuple[list[Memory], bool]:
        """(the memories the model was shown, in full; whether the turn is in the store)."""
        try:  # read-your-writes: the turn is rateable the moment the answer is shown
            recorded = self.store.get_entry(session_id, qa_id, user=user) is not None
        except Exception:
            log.exception("feedback_plugin demo: cannot read back turn %s", qa_id)
            recorded = False
        details: dict[str, tuple[SessionQAEntry, float]] = {}
        if shown:  # the middleware's query again, for each memory's session, score, relevance
            try:
                hits = search_memory(
                    self.store, question, k=MEMORY_K, user=user, min_score=MEMORY_MIN_SCORE
                )
                details = {entry.qa_id: (entry, relevance) for entry, relevance in hits}
            except Exception:
                log.warning("feedback_plugin demo: memory details unavailable", exc_info=True)
        memories = []
        for liked in shown:
            entry, relevance = details.get(liked.qa_id, (None, None))
            memories.append(
                Memory(
                    qa_id=liked.qa_id,
                    session_id=entry.session_id if entry else None,
                    question=liked.question,
                    answer=liked.answer,
                    feedback_score=entry.feedback_score if entry else None,
                    relevance=relevance,
                )
            )
        return memories, recorded


class _TurnUpdates:
    """What the agent's ``updates`` (and ``custom``) stream told of one turn.

    Taken from the stream rather than from the checkpointer afterwards: these
    are the values themselves, not their serialized copies (which lose text
    UTF-8 cannot carry).
    """

    def __init__(self) -> None:
        self.qa_id: str | None = None
        self.answer: str | None = None
        self.gathered: list[str] = []
        """Documents the turn gathered (articles, the memories' texts), in order."""
        self.memory = ""
        """The ``<liked_answers>`` block the model was shown."""

    def name(self, qa_id: object) -> None:
        if self.qa_id is None and isinstance(qa_id, str) and qa_id:
            self.qa_id = qa_id

    def add(self, updates: dict[str, Any]) -> None:
        """One ``updates`` stream item: ``{node: its update (or a list of them)}``."""
        for update in updates.values():
            for part in update if isinstance(update, list) else [update]:
                if isinstance(part, dict):
                    self._take(part)

    def _take(self, update: dict[str, Any]) -> None:
        self.name(update.get("feedback_qa_id"))
        for text in update.get("feedback_context") or []:
            if isinstance(text, str) and text not in self.gathered:
                self.gathered.append(text)
        memory = update.get("feedback_memory")
        if isinstance(memory, str):
            self.memory = memory
        for message in update.get("messages") or []:
            if isinstance(message, AIMessage) and not message.tool_calls:
                self.answer = str(message.text)


def _token_event(data: Any, spoke: set[str | None]) -> dict[str, Any] | None:
    """The event for one ``messages`` stream item: answer text from the model node only.

    Tool-call chunks, tool results and other nodes give nothing; a tool-call
    chunk of a model message whose text was already sent gives ``reset``.
    """
    chunk, metadata = data
    if not isinstance(chunk, AIMessageChunk) or metadata.get("langgraph_node") != "model":
        return None
    if chunk.tool_call_chunks or chunk.tool_calls:
        if chunk.id in spoke:
            spoke.discard(chunk.id)
            return {"type": "reset"}
        return None
    text = chunk.text
    if not text:
        return None
    spoke.add(chunk.id)
    return {"type": "token", "text": text}


def _ndjson(event: dict[str, Any]) -> bytes:
    """One event as a JSON line (UTF-8; ``\\uXXXX`` escapes only when UTF-8 cannot carry it)."""
    try:
        return (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return (json.dumps(event, ensure_ascii=True) + "\n").encode("ascii")


async def _event_lines(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """``events`` as NDJSON; a failure ends the stream with an ``error`` event, no internals."""
    try:
        async for event in events:
            yield _ndjson(event)
    except Exception:
        log.exception("feedback_plugin demo: the chat agent failed")
        yield _ndjson({"type": "error", "detail": CHAT_FAILED})


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
            raise InvalidIdError(f"session_id must have 1 to {MAX_ID_LENGTH} characters")
        return value

    @field_validator("question")
    @classmethod
    def _question(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > MAX_QUESTION:
            raise InvalidArgumentError(
                f"question must have 1 to {MAX_QUESTION} characters besides spaces"
            )
        return value


class ContextDoc(BaseModel):
    """A help-centre article the answer was based on."""

    id: str
    title: str
    text: str


class Memory(BaseModel):
    """A liked (or corrected) earlier turn the model was shown.

    ``session_id``, ``feedback_score`` and ``relevance`` are ``None`` when that
    turn left memory between the model's call and this answer.
    """

    qa_id: str
    session_id: str | None
    question: str
    answer: str = Field(description="the corrected answer when one was given, else the answer")
    feedback_score: int | None
    relevance: float | None = Field(
        description="how well it matched the question (higher is closer)"
    )


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
    ratings: Ratings = Field(description="the score scale and thresholds the page shows")


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
            try:
                for found, _relevance in search_memory(self.store, question, k=10, user=self.user):
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
        )


# -- the app ----------------------------------------------------------------------------

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

    Raises:
        ConfigurationError: ``chat_model`` cannot call tools, or the open mode is refused.
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
        chat_model, responder, note = _model_from_env(tool)
    else:
        if not _calls_tools(chat_model, tool):
            raise ConfigurationError(
                f"the demo's chat model must support tool calling (bind_tools); "
                f"{type(chat_model).__name__} does not"
            )
        responder = _describe(chat_model)
    offline = chat_model is None
    own_store = store is None
    the_store = SessionStore() if store is None else store
    agent = _ChatAgent(
        the_store,
        OfflineChatModel() if chat_model is None else chat_model,
        tool,
        docs,
        responder,
        offline,
    )

    from .. import __version__

    app = FastAPI(
        title="feedback_plugin demo chat",
        version=__version__,
        description="A LangChain agent whose answers you rate; the REST API under /api.",
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
            _event_lines(agent.turn(body.session_id, body.question, user)),
            media_type="application/x-ndjson",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
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
            ratings=Ratings(**thresholds()),
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
