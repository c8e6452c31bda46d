"""The demo chat's agent, and how one chat turn runs on it as a stream of events.

``create_agent(model, tools=[search_help_centre], middleware=[ExplainedMemoryMiddleware(store,
embeddings=..., k=3), MemoriesAsContext()], checkpointer=InMemorySaver())`` (the
first is :class:`~.memory.ExplainedMemoryMiddleware`: ``FeedbackMiddleware`` finding
memory by meaning too with embeddings, each liked answer saying how it was found);
:meth:`ChatAgent.turn`
streams a turn as events (``qa_id`` first, then ``token`` / ``reset``, last
``answer``), which :func:`event_lines` writes as NDJSON for ``POST
/api/chat/stream``. Needs the agents extra (``langchain``, ``langgraph``); no FastAPI
routes here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.runtime import Runtime

from ...errors import FeedbackPluginError
from ...middleware import FeedbackState
from ...models import SessionQAEntry
from ...ratings import POSITIVE_MIN_SCORE
from ...store import SessionStore
from ..explained_memory import FoundBy
from ..offline_model import HELP_TOOL, LikedAnswer, parse_liked_answers
from .content import memory_text
from .memory import ExplainedMemoryMiddleware, asearch_by_meaning
from .models import ChatResponse, ContextDoc, Memory

__all__ = [
    "CHAT_FAILED",
    "MAX_THREADS",
    "MAX_THREAD_TURNS",
    "MEMORY_K",
    "MEMORY_MIN_SCORE",
    "SYSTEM_PROMPT",
    "ChatAgent",
    "ChatTurnError",
    "MemoriesAsContext",
    "event_lines",
]

log = logging.getLogger("feedback_plugin")

MEMORY_K = 3
"""How many liked turns a model call is shown at most."""
MEMORY_MIN_SCORE = POSITIVE_MIN_SCORE
"""The lowest score that makes a turn a memory (a correction always does)."""
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


class ChatTurnError(FeedbackPluginError, RuntimeError):
    """The agent ended a turn without an answer (the client gets a generic error)."""


class MemoriesAsContext(AgentMiddleware[FeedbackState, Any, Any]):
    """Adds the liked turns the model is shown to the turn's recorded context.

    Listed after :class:`FeedbackMiddleware`. That middleware puts the turn's
    liked turns (its ``<liked_answers>`` block) in the state at the turn's
    first model call and records the turn at the call that answers, with the
    documents the turn gathered as context. Before every later model call of
    the turn this adds those liked turns to the gathered documents, as
    ``Question: ...\nAnswer: ...`` (what
    :func:`~feedback_plugin.memory.retriever.entry_document` writes; with a
    last line ``Found by: meaning (similarity 0.52)`` when memory found it by
    meaning, :func:`~.content.memory_text`), so ``GET /api/chat/history`` can
    show which memories an answer used, and how they were found. (A
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
        missing = [text for text in map(memory_text, shown) if text not in have]
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


class ChatAgent:
    """The demo's agent and how one chat turn runs on it (streamed as events)."""

    def __init__(
        self,
        store: SessionStore,
        model: BaseChatModel,
        tool: BaseTool,
        docs: list[Document],
        responder: str,
        offline: bool,
        embeddings: Embeddings | None = None,
    ) -> None:
        self.store = store
        self.responder = responder
        self.offline = offline
        self.embeddings = embeddings
        """Memory is found by words and by these embeddings' meaning (``None``: by words)."""
        self.docs = {d.page_content: d for d in docs}
        checkpointer = InMemorySaver()
        self.threads = _Threads(checkpointer)
        self.running: set[asyncio.Task[None]] = set()
        self.agent = create_agent(
            model,
            tools=[tool],
            system_prompt=SYSTEM_PROMPT,
            middleware=[
                ExplainedMemoryMiddleware(
                    store, embeddings=embeddings, k=MEMORY_K, min_score=MEMORY_MIN_SCORE
                ),
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
        memories, recorded = await self._read_back(session_id, qa_id, question, shown, user)
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

    async def _read_back(
        self,
        session_id: str,
        qa_id: str,
        question: str,
        shown: list[LikedAnswer],
        user: str | None,
    ) -> tuple[list[Memory], bool]:
        """(the memories the model was shown, in full; whether the turn is in the store)."""
        try:  # read-your-writes: the turn is rateable the moment the answer is shown
            recorded = await self.store.aget_entry(session_id, qa_id, user=user) is not None
        except Exception:
            log.exception("feedback_plugin demo: cannot read back turn %s", qa_id)
            recorded = False
        details: dict[str, tuple[SessionQAEntry, float]] = {}
        if shown:  # the middleware's query again, for each memory's session, score, relevance
            try:
                hits = await asearch_by_meaning(
                    self.store,
                    question,
                    self.embeddings,
                    k=MEMORY_K,
                    user=user,
                    min_score=MEMORY_MIN_SCORE,
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
                    found_by=found_by(liked.found_by),
                    similarity=liked.similarity,
                )
            )
        return memories, recorded


_FOUND_BY: dict[str | None, FoundBy] = {
    "words": "words",
    "meaning": "meaning",
    "words+meaning": "words+meaning",
}


def found_by(value: str | None) -> FoundBy:
    """How a memory was found, as the demo's ``<liked_answers>`` block (or a turn's recorded
    context) says: an example it does not mark was found by words."""
    return _FOUND_BY.get(value, "words")


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


async def event_lines(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """``events`` as NDJSON; a failure ends the stream with an ``error`` event, no internals."""
    try:
        async for event in events:
            yield _ndjson(event)
    except Exception:
        log.exception("feedback_plugin demo: the chat agent failed")
        yield _ndjson({"type": "error", "detail": CHAT_FAILED})
