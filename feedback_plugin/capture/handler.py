"""FeedbackCallbackHandler: records one turn per root LangChain run.

Run state lives in a tiny :class:`_Turn` per *root* run, in ``_turns``; every
run of the root's tree (the root too) maps to that turn in ``_turn_of``. Both
are freed when the root ends or fails, so a long-lived handler holds nothing
between turns. Callbacks may arrive from many threads (``batch``) or tasks
(``abatch``) at once: each touches only its own run's state through single
dict operations.

Every callback body is guarded: a failure here (or in the store) is logged
and never reaches the user's chain, unless ``raise_error=True``.

LangGraph graphs and agents: a root run whose output state holds a
``messages`` list is recorded as the newest human message and the final AI
message (see :func:`~.extract.turn_from_messages`), not as the state's JSON.
A run that pauses at ``interrupt()`` records nothing; the run that resumes
it (``Command(resume=...)``) records the turn, with its own run id as the
``qa_id``. The user comes from the run's metadata, else from LangGraph's
``configurable["user_id"]`` or runtime ``context``, read from the config
the graph's nodes run with, else the handler's own ``user``. A run whose
output carries ``feedback_qa_id`` was recorded by
:class:`~feedback_plugin.middleware.FeedbackMiddleware`, and is not
recorded again.

Memory attribution: the documents of a retriever run inside the root run
(or a tool's ``content_and_artifact`` artifact) that are remembered turns --
:class:`~feedback_plugin.PositiveMemoryRetriever`'s, and the
``search_positive_memory`` tool's, whose metadata ``source`` is
:data:`~feedback_plugin.memory.MEMORY_SOURCE` -- are named in the recorded
turn's ``memory_ids`` (with ``memory_sessions``), so rating the answer
charges them (:mod:`feedback_plugin.attribution`). Every document, memory or
not, is also the turn's ``context``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables.config import var_child_runnable_config

from ..interpretation import INTERPRET_TAG
from .extract import (
    answer_from,
    is_command,
    is_interrupt,
    json_safe,
    memories_in,
    messages_in,
    question_from,
    session_id_from,
    turn_from_messages,
    user_from,
    user_from_config,
)

if TYPE_CHECKING:
    from langchain_core.documents import Document
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import LLMResult

    from ..store import SessionStore

__all__ = ["FeedbackCallbackHandler"]

log = logging.getLogger("feedback_plugin")

_MODEL_KEYS = ("ls_provider", "ls_model_name")


class _Turn:
    """What a root run has shown so far (a plain slotted class: one is made per turn)."""

    __slots__ = (
        "context",
        "graph",
        "inputs",
        "kind",
        "memory",
        "metadata",
        "paused",
        "runs",
        "session_id",
        "user",
    )

    def __init__(
        self,
        kind: str,  # "chain" | "llm" | "other" (retriever or tool as root: not a chat turn)
        session_id: str | None,
        user: str | None,
        inputs: Any,
        metadata: dict[str, Any],
        rid: int,
    ) -> None:
        self.kind = kind
        self.session_id = session_id
        self.user = user
        self.inputs = inputs
        self.metadata = metadata
        self.context: list[str] = []
        self.memory: tuple[tuple[str, str], ...] = ()  # (session_id, qa_id) of memories used
        self.runs = [rid]  # every run of the tree (as ``run_id.int``), root first
        self.graph = metadata.get("ls_integration") in _GRAPHS  # a LangGraph run
        self.paused = False  # a node called interrupt(): the turn is not over


_GRAPHS = frozenset(("langgraph", "langchain_create_agent"))
"""``ls_integration`` metadata of LangGraph graphs and ``create_agent`` agents."""


def _name_model(turn: _Turn, metadata: dict[str, Any]) -> None:
    """Copy the model's name and provider from a model run's metadata into the turn's."""
    for key in _MODEL_KEYS:
        if key in metadata and key not in turn.metadata:
            turn.metadata[key] = metadata[key]


class FeedbackCallbackHandler(BaseCallbackHandler):
    """Record every chat turn of a chain into a :class:`~feedback_plugin.SessionStore`.

    Args:
        store: where turns go; ``None`` uses the default store
            (``$FEEDBACK_PLUGIN_DIR``, see :mod:`feedback_plugin.session`).
        session_id: used when the run's metadata names no session.
        user: used when the run names no user (metadata ``user_id``, or
            LangGraph's ``configurable["user_id"]`` / runtime ``context``).
        raise_error: write each turn synchronously and let store failures
            propagate into the chain (default: log them, never break the chain).

    The turn's ``qa_id`` is ``str(root run_id)``: pass ``config={"run_id": ...}``
    to know it before the answer is shown.
    """

    run_inline = True  # cheap, non-blocking: no executor hop under asyncio
    # LangChain reads one of these for every event it sends to a handler: plain
    # class attributes, not the base class's properties, keep that read cheap.
    ignore_llm = ignore_chat_model = ignore_chain = ignore_retriever = False
    ignore_agent = False  # it also covers tool events, which keep a tool's children in its turn
    ignore_retry = ignore_custom_event = True  # events this handler has no use for

    def __init__(
        self,
        store: SessionStore | None = None,
        *,
        session_id: str | None = None,
        user: str | None = None,
        raise_error: bool = False,
    ) -> None:
        from ..models import check_id, check_user

        if store is None:
            from ..session import default_store

            store = default_store()
        self.store = store
        self.session_id = None if session_id is None else check_id(session_id)
        self.user = check_user(user)
        self.raise_error = raise_error
        # Keyed by ``run_id.int``: an int hashes in C, a UUID in Python.
        self._turns: dict[int, _Turn] = {}  # root run -> its turn
        self._turn_of: dict[int, _Turn] = {}  # every run of a tree in flight -> its root's turn

    def __repr__(self) -> str:
        return f"FeedbackCallbackHandler({self.store!r}, session_id={self.session_id!r})"

    @property
    def active_runs(self) -> int:
        """Root runs in flight (0 whenever no chain is running)."""
        return len(self._turns)

    def _failed(self, event: str) -> None:
        """Called from an ``except`` block: log (the chain goes on) or re-raise."""
        if self.raise_error:
            raise  # re-raises the exception being handled by the caller
        log.exception("feedback_plugin: %s failed; the chain goes on", event)

    # -- run tracking ----------------------------------------------------------
    #
    # The hot path: LangChain calls these a few times per chain step, so they
    # do a handful of dict operations each. A run below a root is filed under
    # its root's turn at its start and forgotten with the whole tree when the
    # root ends or fails (its own end needs no work, and a child that never
    # reports its end, like an abandoned generator, leaves nothing behind).

    def _start(
        self,
        kind: str,
        run_id: UUID,
        parent_run_id: UUID | None,
        inputs: Any,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
    ) -> _Turn | None:
        """Track a starting run; return its root's turn if this run is a child."""
        rid = run_id.int
        if parent_run_id is not None:
            turn = self._turn_of.get(parent_run_id.int)
            if turn is not None:
                self._turn_of[rid] = turn
                turn.runs.append(rid)
                if turn.session_id is None and metadata:
                    # e.g. with_configurable_session(...) wrapping an inner step only
                    turn.session_id = session_id_from(metadata, None)
                    turn.user = user_from(metadata, turn.user)
                if turn.user is None and turn.graph:
                    # LangGraph: inside a node, the running code's config holds the
                    # caller's configurable and the runtime context
                    turn.user = user_from_config(var_child_runnable_config.get())
                return turn
        if tags and INTERPRET_TAG in tags:
            return None  # the library's own model call (process_feedback): not a chat turn
        turn = _Turn(
            kind,
            session_id_from(metadata, self.session_id),
            user_from(metadata, None),  # the handler's own user is the last fallback
            inputs,
            json_safe(metadata, tags),
            rid,
        )
        self._turns[rid] = self._turn_of[rid] = turn
        return None

    def _end(self, run_id: UUID) -> _Turn | None:
        """If ``run_id`` is a root, forget its tree and return its turn."""
        turn = self._turns.pop(run_id.int, None)
        if turn is not None:
            turn_of = self._turn_of
            for rid in turn.runs:
                turn_of.pop(rid, None)
        return turn

    def _record(self, run_id: UUID, turn: _Turn, inputs: Any, outputs: Any) -> None:
        if turn.session_id is None or turn.kind == "other" or turn.paused:
            return
        messages = messages_in(outputs)
        if messages is not None:  # a LangGraph state: the conversation's newest turn
            if "feedback_qa_id" in outputs:  # FeedbackMiddleware recorded it
                return
            found = turn_from_messages(messages)
            if found is None:  # no answer to the newest question (yet)
                return
            question, answer = found
        else:
            if is_command(inputs):  # a resumed run: its own output names the question
                inputs = outputs
            question, answer = question_from(inputs), answer_from(outputs)
        user = self.user if turn.user is None else turn.user
        if self.raise_error:  # written now, so a store failure reaches the chain
            self.store.record(
                turn.session_id,
                question,
                answer,
                turn.context,
                user=user,
                metadata=turn.metadata,
                qa_id=str(run_id),
                wait=True,
                memory_ids=turn.memory,
            )
        else:  # queued as fields: the writer thread builds and stores the entry
            self.store.record_trusted(
                turn.session_id,
                question,
                answer,
                turn.context,
                user,
                turn.metadata,
                run_id.int,  # the writer thread makes it str(run_id)
                turn.memory,
            )

    # -- chains ----------------------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._start("chain", run_id, parent_run_id, inputs, tags, metadata)
        except Exception:
            self._failed("on_chain_start")

    def on_chain_end(
        self,
        outputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            turn = self._end(run_id)
            if turn is not None:
                # Under stream()/astream() the start saw a placeholder; the real input comes here.
                inputs = kwargs.get("inputs")
                self._record(run_id, turn, turn.inputs if inputs is None else inputs, outputs)
        except Exception:
            self._failed("on_chain_end")

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            if self._end(run_id) is None and is_interrupt(error):
                turn = self._turn_of.get(run_id.int)
                if turn is not None:  # a node paused the run; the root still "ends"
                    turn.paused = True
        except Exception:
            self._failed("on_chain_error")

    # -- models ----------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            turn = self._start("llm", run_id, parent_run_id, messages, tags, metadata)
            if turn is not None and metadata:
                _name_model(turn, metadata)
        except Exception:
            self._failed("on_chat_model_start")

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            prompt = prompts[0] if prompts else ""
            turn = self._start("llm", run_id, parent_run_id, prompt, tags, metadata)
            if turn is not None and metadata:
                _name_model(turn, metadata)
        except Exception:
            self._failed("on_llm_start")

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            turn = self._end(run_id)
            if turn is not None:
                self._record(run_id, turn, turn.inputs, response)
        except Exception:
            self._failed("on_llm_end")

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            self._end(run_id)
        except Exception:
            self._failed("on_llm_error")

    # -- retrievers and tools --------------------------------------------------

    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._start("other", run_id, parent_run_id, query, tags, metadata)
        except Exception:
            self._failed("on_retriever_start")

    def on_retriever_end(
        self, documents: Sequence[Document], *, run_id: UUID, **kwargs: Any
    ) -> None:
        try:
            if self._end(run_id) is None and (turn := self._turn_of.get(run_id.int)):
                turn.context.extend(doc.page_content for doc in documents)
                if found := memories_in(documents):  # remembered turns handed to the model
                    turn.memory += found
        except Exception:
            self._failed("on_retriever_end")

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            self._end(run_id)
        except Exception:
            self._failed("on_retriever_error")

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._start("other", run_id, parent_run_id, input_str, tags, metadata)
        except Exception:
            self._failed("on_tool_start")

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            if self._end(run_id) is None and (turn := self._turn_of.get(run_id.int)):
                # a tool that returns documents as its artifact (content_and_artifact)
                artifact = getattr(output, "artifact", None)
                if isinstance(artifact, list):
                    for doc in artifact:
                        text = getattr(doc, "page_content", None)
                        if isinstance(text, str) and text not in turn.context:
                            turn.context.append(text)
                    if found := memories_in(artifact):  # e.g. search_positive_memory's
                        turn.memory += found
        except Exception:
            self._failed("on_tool_end")

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            if self._end(run_id) is None and is_interrupt(error):
                turn = self._turn_of.get(run_id.int)
                if turn is not None:  # interrupt() inside a tool
                    turn.paused = True
        except Exception:
            self._failed("on_tool_error")
