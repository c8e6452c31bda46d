"""FeedbackMiddleware: record every agent turn, and hand the user's liked turns back.

For LangChain v1 agents (``langchain.agents.create_agent``), which are
extended through *agent middleware*::

    from langchain.agents import create_agent
    from feedback_plugin import SessionStore
    from feedback_plugin.middleware import FeedbackMiddleware

    agent = create_agent(model, tools, middleware=[FeedbackMiddleware(SessionStore())])
    agent.invoke({"messages": [("user", "How do I reset my password?")]},
                 {"configurable": {"thread_id": "t1", "user_id": "alice"}})

One agent turn is one recorded turn. The middleware adds no node to the
agent's graph (each node costs LangGraph a task): it wraps the model and
tool calls.

* The turn's first model call names the turn: its ``qa_id`` is the run's id
  (``str(config["run_id"])`` when the caller passes one, else the id LangGraph
  gave the run), written to the ``custom`` stream as
  ``{"feedback_qa_id": qa_id}`` before the model says a word, so a streaming
  UI can put thumbs under the answer as it appears, and kept in the state
  under ``feedback_qa_id``. With ``memory=True`` this call also runs the
  turn's one memory query: the user's liked (or corrected) turns that match
  the newest question.
* With ``detect_feedback=model`` (opt-in), that first call of a turn that
  follows an answer first asks ``model`` whether the new message is feedback
  on an earlier answer ("no, it's Canberra"); when it is, the rating is
  stored (:meth:`SessionStore.process_feedback` with ``detect=True``) before
  the agent answers, and ``{"feedback_result": {...}}`` (the
  :class:`~feedback_plugin.interpretation.FeedbackResult` without ``entry``
  and ``model_reply``) goes to the ``custom`` stream. It costs one more model call per such turn;
  its tokens stay out of the ``messages`` stream (tag ``nostream``); a
  failure is logged and the agent goes on.
* Every model call of the turn gets those turns in its system message, as
  delimited examples (:func:`memory_block`), for that call only: they are
  never written into the conversation. The recorded turn's ``memory_ids``
  (with ``memory_sessions``) name the liked turns so shown, so rating the
  answer charges them (:mod:`feedback_plugin.attribution`).
* Every tool call keeps the documents that retrievers return inside it (a
  plain retriever tool hands the model text only), and those of a tool's
  ``content_and_artifact`` artifact, in the agent state, so a turn paused by
  an interrupt and resumed elsewhere still has them. Remembered turns among
  them (``memory.MEMORY_SOURCE``) join the turn's ``memory_ids`` too.
* The model call that answers (an AI message without tool calls) records
  the turn: session = the thread id (else metadata ``session_id``), user =
  metadata or ``configurable`` ``user_id``, else the runtime context's
  ``user_id``; question = the newest human message; answer = that message;
  context = the documents gathered.

A turn that pauses at an interrupt is recorded once, when the run that
resumes it finishes, under the ``qa_id`` of the run that started it. Store
failures are logged and never break the agent. Used together with
:class:`~feedback_plugin.FeedbackCallbackHandler`, a turn is recorded once:
the handler leaves runs whose output carries ``feedback_qa_id`` to the
middleware.

Needs the ``agents`` extra (``pip install "feedback-plugin[agents]"``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Annotated, Any

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest
from langchain.agents.middleware.types import (
    ExtendedModelResponse,
    ModelResponse,
    PrivateStateAttr,
)
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.messages import AIMessage, SystemMessage, ToolMessage
from langchain_core.runnables import Runnable
from langchain_core.tracers.context import register_configure_hook
from langgraph.config import get_config
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.types import Command
from typing_extensions import NotRequired

from .capture.extract import (
    json_safe,
    memories_in,
    session_id_from,
    turn_from_messages,
    user_from,
    user_from_config,
)
from .errors import ArgumentTypeError, InvalidArgumentError, StoreError
from .memory.retriever import search_memory
from .models import MAX_SCORE, MIN_SCORE, SessionQAEntry, check_id, check_user
from .ratings import POSITIVE_MIN_SCORE
from .store import SessionStore

__all__ = ["FeedbackMiddleware", "FeedbackState"]

log = logging.getLogger("feedback_plugin")

_RESET = "\x00feedback_plugin:new-turn"
"""Starts the turn's documents afresh (LangGraph stores a channel's first value as given,
without the reducer, so readers skip it too: :func:`_documents`)."""


def _gather(old: list[Any] | None, new: Sequence[Any]) -> list[Any]:
    """The state reducer of the turn's documents (and of the memories its tools returned):
    append new ones; a list that starts with ``_RESET`` starts over."""
    new = list(new)
    if new[:1] == [_RESET]:
        old, new = [_RESET], new[1:]
    out = list(old or [])
    out.extend(doc for doc in new if doc not in out)
    return out


def _text_of(message: Any) -> str:
    text = getattr(message, "text", "")
    return text if type(text) is str else str.__str__(text) if isinstance(text, str) else ""


def _is_ai(message: Any) -> bool:
    return getattr(message, "type", None) == "ai"


def _newest_human(messages: Sequence[Any]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if getattr(messages[i], "type", None) == "human":
            return i
    return -1


def _documents(state: Mapping[str, Any]) -> list[str]:
    return [doc for doc in state.get("feedback_context") or [] if doc != _RESET]


_formatted: ContextVar[list[SessionQAEntry] | None] = ContextVar(
    "feedback_plugin_formatted_memories", default=None
)
"""While :meth:`FeedbackMiddleware._shown` runs: the entries :func:`memory_block` formats."""

Memory = tuple[tuple[str, str], ...]
"""The ``(session_id, qa_id)`` of each liked turn shown to the model, as
``SessionStore.record_trusted`` takes them."""


def _memory_refs(refs: object) -> Memory:
    """The state's ``[session_id, qa_id]`` pairs (lists or tuples after a checkpoint's
    round trip) as distinct ``(session_id, qa_id)`` pairs, the first mention kept;
    anything else is passed over."""
    if not isinstance(refs, (list, tuple)):
        return ()
    out: dict[str, str] = {}
    for ref in refs:
        if isinstance(ref, (list, tuple)) and len(ref) == 2:
            session, qa = ref
            if isinstance(session, str) and session and isinstance(qa, str) and qa:
                out.setdefault(qa, session)
    return tuple((session, qa) for qa, session in out.items())


class FeedbackState(AgentState[Any]):
    """The agent state keys this middleware adds."""

    feedback_qa_id: NotRequired[str]
    """The current turn's id: rate the answer with it."""
    # the reducer must come last: LangGraph reads only the last Annotated item as one
    feedback_context: NotRequired[Annotated[list[str], PrivateStateAttr, _gather]]
    feedback_memory: NotRequired[Annotated[str, PrivateStateAttr]]
    feedback_memory_ids: NotRequired[Annotated[list[Any], PrivateStateAttr, _gather]]
    """``[session_id, qa_id]`` of each remembered turn handed to the model this turn: the
    liked turns in ``feedback_memory``, then those its tools returned (a
    ``PositiveMemoryRetriever`` behind a tool, ``search_positive_memory``)."""


# -- documents retrieved inside tools ----------------------------------------------------


class _DocumentCollector(BaseCallbackHandler):
    """Collects what retrievers return while one tool call runs (see :data:`_collector`)."""

    run_inline = True
    ignore_llm = ignore_chat_model = ignore_chain = ignore_agent = True
    ignore_retry = ignore_custom_event = True

    def __init__(self) -> None:
        self.documents: list[str] = []
        self.memories: list[tuple[str, str]] = []

    def on_retriever_end(self, documents: Sequence[Document], **kwargs: Any) -> None:
        self.documents.extend(doc.page_content for doc in documents)
        self.memories.extend(memories_in(documents))


_collector: ContextVar[_DocumentCollector | None] = ContextVar(
    "feedback_plugin_documents", default=None
)
register_configure_hook(_collector, inheritable=True)


def _artifact_documents(result: Any) -> list[str]:
    artifact = getattr(result, "artifact", None)
    if not isinstance(artifact, list):
        return []
    return [doc.page_content for doc in artifact if isinstance(doc, Document)]


def _with_documents(result: ToolMessage | Command[Any], found: _DocumentCollector) -> Any:
    """The tool's answer, with the documents (and memories) it retrieved for the state."""
    documents = found.documents + _artifact_documents(result)
    if not documents or not isinstance(result, ToolMessage):
        return result
    update: dict[str, Any] = {"messages": [result], "feedback_context": documents}
    memories = [*found.memories, *memories_in(getattr(result, "artifact", None))]
    if memories:
        update["feedback_memory_ids"] = [list(ref) for ref in memories]
    return Command(update=update)


# -- the middleware ---------------------------------------------------------------------


class FeedbackMiddleware(AgentMiddleware[FeedbackState, Any, Any]):
    """Record each agent turn in ``store``; give the model the user's liked turns.

    Args:
        store: where turns are recorded and memories come from.
        k: how many liked turns a model call is shown at most.
        min_score: the lowest score that counts as liked (a correction always does).
        memory: add liked turns to the system message of the turn's model calls.
        record: record the turn when the agent finishes it.
        session_id: the session when the run has no thread id and no
            ``session_id`` metadata (otherwise such a turn is not recorded).
        user: the user when the run names none.
        embeddings: find liked turns by meaning too (any LangChain ``Embeddings``;
            see :func:`~feedback_plugin.memory.search_memory`).
        detect_feedback: a chat model that reads each new message of a thread that
            already has an answer, and stores it as feedback on that answer when it
            is feedback (see the module docs). ``None``: no detection.
    """

    state_schema = FeedbackState

    def __init__(
        self,
        store: SessionStore,
        *,
        k: int = 3,
        min_score: int = POSITIVE_MIN_SCORE,
        memory: bool = True,
        record: bool = True,
        session_id: str | None = None,
        user: str | None = None,
        embeddings: Embeddings | None = None,
        detect_feedback: Runnable[Any, Any] | None = None,
    ) -> None:
        if not isinstance(store, SessionStore):
            raise ArgumentTypeError(f"store must be a SessionStore, got {type(store).__name__}")
        if type(k) is not int or k < 1:
            raise InvalidArgumentError(f"k must be an int >= 1, got {k!r}")
        super().__init__()
        self.store = store
        self.k = k
        if type(min_score) is not int or not MIN_SCORE <= min_score <= MAX_SCORE:
            raise InvalidArgumentError(
                f"min_score must be an int from {MIN_SCORE} to {MAX_SCORE}, got {min_score!r}"
            )
        checked = min_score
        self.min_score: int = checked
        self.memory = memory
        self.record = record
        self.session_id = session_id
        self.user = check_user(user)
        if embeddings is not None and not isinstance(embeddings, Embeddings):
            raise ArgumentTypeError(
                f"embeddings must be a LangChain Embeddings, got {type(embeddings).__name__}"
            )
        self.embeddings = embeddings
        if detect_feedback is not None and not isinstance(detect_feedback, Runnable):
            raise ArgumentTypeError(
                "detect_feedback must be a LangChain chat model, "
                f"got {type(detect_feedback).__name__}"
            )
        self.detect_feedback = detect_feedback
        self.tools = []

    def __repr__(self) -> str:
        return f"FeedbackMiddleware({self.store!r}, k={self.k}, memory={self.memory})"

    # -- who and where -------------------------------------------------------------

    def _where(self, runtime: Runtime[Any] | None) -> tuple[str | None, str | None, dict[str, Any]]:
        """``(session, user, metadata)`` of the running agent turn."""
        try:
            config = get_config()
        except RuntimeError:  # not inside a runnable (direct calls in tests)
            config = {}
        metadata = config.get("metadata") or {}
        info = runtime.execution_info if runtime is not None else None
        thread = getattr(info, "thread_id", None) if info is not None else None
        session = session_id_from(metadata, None) or (str(thread) if thread else None)
        user = user_from(metadata, None) or user_from_config(config) or self.user
        if user is None and runtime is not None:
            context = runtime.context
            found = context.get("user_id") if isinstance(context, Mapping) else None
            found = found or getattr(context, "user_id", None)
            user = found if isinstance(found, str) and found else None
        keep = {
            k: v
            for k, v in metadata.items()
            if not k.startswith(("langgraph_", "checkpoint_", "__")) and k != "ls_integration"
        }
        return session or self.session_id, user, json_safe(keep)

    # -- the turn: named at its first model call, recorded at its answer --------------

    def _begin(self, request: ModelRequest[Any]) -> dict[str, Any] | None:
        """At the turn's first model call: its qa_id (streamed at once) and its memories."""
        messages = request.messages
        newest = _newest_human(messages)
        if newest < 0:
            return None  # no question: nothing to name
        if any(_is_ai(m) for m in messages[newest + 1 :]):
            return None  # a later call of the same turn: the state has it all
        info = request.runtime.execution_info if request.runtime is not None else None
        run_id = getattr(info, "run_id", None) if info is not None else None
        qa_id = str(run_id) if run_id else str(uuid.uuid4())
        if request.runtime is not None:
            try:
                request.runtime.stream_writer({"feedback_qa_id": qa_id})
            except Exception:  # no stream consumer: nothing to tell
                log.debug("feedback_plugin: no custom stream for the qa_id", exc_info=True)
        # Write only what changes: every state key written costs LangGraph a channel update.
        update: dict[str, Any] = {"feedback_qa_id": qa_id}
        if _documents(request.state):
            update["feedback_context"] = [_RESET]  # the previous turn's documents
        if self.detect_feedback is not None and any(_is_ai(m) for m in messages[:newest]):
            self._detect(request, _text_of(messages[newest]))  # before memory: it may change
        refs: list[list[str]] = []
        if self.memory:
            update["feedback_memory"], refs = self._shown(request, _text_of(messages[newest]))
        elif request.state.get("feedback_memory"):
            update["feedback_memory"] = ""
        if refs or _memory_refs(request.state.get("feedback_memory_ids")):
            update["feedback_memory_ids"] = [_RESET, *refs]  # the previous turn's go
        return update

    def _detect(self, request: ModelRequest[Any], words: str) -> None:
        """Store the new message as feedback on an earlier answer, if it is some."""
        if not words.strip():
            return
        session, user, _ = self._where(request.runtime)
        model = self.detect_feedback
        if session is None or model is None:
            return
        try:
            result = self.store.process_feedback(
                session, words, user=user, model=model, detect=True
            )
        except Exception:
            log.exception("feedback_plugin: feedback detection failed; the agent goes on")
            return
        if not result.applied:
            log.debug("feedback_plugin: no feedback stored: %s", result.reason)
            return
        log.info("feedback_plugin: feedback stored on turn %s: %s", result.qa_id, result.reason)
        if request.runtime is not None:
            shown = result.model_dump(mode="json", exclude={"entry", "model_reply"})
            try:
                request.runtime.stream_writer({"feedback_result": shown})
            except Exception:  # no stream consumer: nothing to tell
                log.debug("feedback_plugin: no custom stream for the feedback", exc_info=True)

    def _shown(self, request: ModelRequest[Any], question: str) -> tuple[str, list[list[str]]]:
        """:meth:`_memories`' block and the ``[session_id, qa_id]`` of each liked turn it
        shows: the entries :func:`memory_block` formatted while it ran (so a subclass's
        ``_memories`` that builds its block with it is attributed too) named in the block."""
        shown: list[SessionQAEntry] = []
        token = _formatted.set(shown)
        try:
            block = self._memories(request, question)
        finally:
            _formatted.reset(token)
        if not isinstance(block, str) or not block:
            return "", []
        return block, [[e.session_id, e.qa_id] for e in shown if f'qa_id="{e.qa_id}"' in block]

    def _memories(self, request: ModelRequest[Any], question: str) -> str:
        """The liked turns that match the turn's question, as a system-message block."""
        if not question.strip():
            return ""
        _, user, _ = self._where(request.runtime)
        try:
            hits = search_memory(
                self.store,
                question,
                k=self.k,
                user=user,
                min_score=self.min_score,
                embeddings=self.embeddings,
            )
        except StoreError:
            log.exception("feedback_plugin: memory unavailable; the agent answers without it")
            return ""
        return memory_block([entry for entry, _ in hits])

    def _prepare(
        self, request: ModelRequest[Any]
    ) -> tuple[ModelRequest[Any], dict[str, Any], Memory]:
        """The request to send (memories in its system message), the state update, and
        the ``(session_id, qa_id)`` of the memories that request shows the model."""
        try:
            update = self._begin(request) or {}
            block = update.get("feedback_memory", request.state.get("feedback_memory"))
            sent = self._with_memory(request, block if self.memory else None)
            if sent is request:
                return sent, update, ()
            refs = update.get("feedback_memory_ids", request.state.get("feedback_memory_ids"))
            return sent, update, _memory_refs(refs)
        except Exception:
            log.exception("feedback_plugin: FeedbackMiddleware could not prepare the model call")
            return request, {}, ()

    def _with_memory(self, request: ModelRequest[Any], block: object) -> ModelRequest[Any]:
        if not isinstance(block, str) or not block:
            return request
        system = request.system_message
        if system is None:
            return request.override(system_message=SystemMessage(content=block))
        content = system.content
        if isinstance(content, str):
            return request.override(
                system_message=SystemMessage(content=f"{content}\n\n{block}" if content else block)
            )
        blocks: list[str | dict[Any, Any]] = [*content, {"type": "text", "text": block}]
        return request.override(system_message=SystemMessage(content=blocks))

    def _finish(
        self, request: ModelRequest[Any], update: dict[str, Any], memory: Memory, response: Any
    ) -> Any:
        """Record the turn if ``response`` is its answer; return what the model node returns."""
        try:
            if self.record:
                self._record(request, update, memory, response)
        except Exception:
            log.exception("feedback_plugin: agent turn not recorded; the agent goes on")
        if not update:
            return response
        if isinstance(response, ExtendedModelResponse):  # an inner middleware's command too
            return response  # (rare: that command wins; the qa_id still went out on the stream)
        if isinstance(response, AIMessage):
            response = ModelResponse(result=[response])
        return ExtendedModelResponse(model_response=response, command=Command(update=update))

    def _record(
        self, request: ModelRequest[Any], update: dict[str, Any], memory: Memory, response: Any
    ) -> None:
        result = (
            response.model_response if isinstance(response, ExtendedModelResponse) else response
        )
        messages = [result] if isinstance(result, AIMessage) else list(result.result)
        found = turn_from_messages([*request.messages, *messages])
        qa_id = update.get("feedback_qa_id") or request.state.get("feedback_qa_id")
        if found is None or not isinstance(qa_id, str) or not qa_id:
            return  # not the answer yet (a tool call), or no question
        session, user, metadata = self._where(request.runtime)
        if session is None:
            log.warning(
                "feedback_plugin: agent turn %s not recorded: no thread_id, no session_id"
                " metadata and no FeedbackMiddleware(session_id=...)",
                qa_id,
            )
            return
        if "feedback_qa_id" not in update:  # a later call: the turn's tools have run
            context = _documents(request.state)
            memory += _memory_refs(request.state.get("feedback_memory_ids"))
        else:
            context = []
        question, answer = found
        # Queued as plain fields: the store's writer thread builds the entry (as for the
        # callback handler); the ids are checked here, the rest is what record() accepts.
        self.store.record_trusted(
            check_id(session), question, answer, context, check_user(user), metadata, qa_id, memory
        )

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> Any:
        sent, update, memory = self._prepare(request)
        return self._finish(request, update, memory, handler(sent))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> Any:
        sent, update, memory = await asyncio.to_thread(self._prepare, request)
        return self._finish(request, update, memory, await handler(sent))

    # -- every tool call ---------------------------------------------------------------

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        collector = _DocumentCollector()
        token = _collector.set(collector)
        try:
            result = handler(request)
        finally:
            _collector.reset(token)
        return _with_documents(result, collector) if self.record else result

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        collector = _DocumentCollector()
        token = _collector.set(collector)
        try:
            result = await handler(request)
        finally:
            _collector.reset(token)
        return _with_documents(result, collector) if self.record else result


def memory_block(entries: Sequence[SessionQAEntry]) -> str:
    """Liked turns as delimited examples for a system message ("" for none).

    >>> memory_block([SessionQAEntry(qa_id="q1", session_id="s", question="Hi?",
    ...     answer="Hello.", correction="Hello!")])  # doctest: +NORMALIZE_WHITESPACE
    '<liked_answers>\\nAnswers this user liked before (a corrected answer is the right
    one). Follow them when the question matches.\\n<example qa_id="q1">\\nQuestion:
    Hi?\\nAnswer: Hello!\\n</example>\\n</liked_answers>'
    """
    if not entries:
        return ""
    formatted = _formatted.get()
    if formatted is not None:  # FeedbackMiddleware._shown: the entries shown to the model
        formatted.extend(entries)
    lines = [
        "<liked_answers>",
        "Answers this user liked before (a corrected answer is the right one). "
        "Follow them when the question matches.",
    ]
    for entry in entries:
        lines += [
            f'<example qa_id="{entry.qa_id}">',
            f"Question: {entry.question}",
            f"Answer: {entry.best_answer}",
            "</example>",
        ]
    lines.append("</liked_answers>")
    return "\n".join(lines)
