"""FeedbackToolkit: let an agent rate turns and search what users liked.

Three tools, named exactly ``add_feedback``, ``clear_feedback`` and
``search_positive_memory``. Every failure -- a score of 9, an unknown
``qa_id``, a store that is down -- comes back to the agent as a readable
string starting with ``Error:``; no tool raises out of the agent loop, and a
refused call changes nothing.

A toolkit built without ``session_id`` (or ``user``) takes them from the run
it is called in: the thread id (LangGraph, ``create_agent``) or ``session_id``
metadata, and the ``user_id`` of the metadata, ``configurable`` or runtime
context -- so one compiled agent serves every thread, each rating its own
turns. Without a ``qa_id``, ``add_feedback`` and ``clear_feedback`` act on
the newest recorded turn of the session: the answer the user is reacting
to. The model learns other qa_ids from ``search_positive_memory`` results
and from memories :class:`~feedback_plugin.middleware.FeedbackMiddleware`
shows it.

What the tools answer:

* ``add_feedback``: ``Feedback saved for turn <qa_id> (recorded at
  2026-05-01T12:00:00Z). The turn is now remembered: positive memory hands it
  back for similar questions.`` -- or ``... The turn is not remembered:
  positive memory keeps turns rated 4 or more, or corrected.`` (Mixpeek's
  ``stored`` and ``recorded_at``, in words an agent reads).
* ``clear_feedback``: ``Feedback cleared for turn <qa_id> (recorded at ...).
  The turn is not remembered: ...``
* ``search_positive_memory``: a numbered list of the liked turns (question,
  answer, qa_id, session, score) as the message text, and the same turns as
  memory Documents in the tool message's artifact (``content_and_artifact``),
  so :class:`~feedback_plugin.FeedbackCallbackHandler` names them in the
  recorded turn's ``memory_ids``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, Literal, TypeVar

from langchain_core.documents import Document
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tools import BaseTool, BaseToolkit, ToolException
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from .capture.extract import session_id_from, user_from, user_from_config
from .errors import ArgumentTypeError, FeedbackPluginError, StoreError, TurnNotFoundError
from .memory.retriever import asearch_memory, entry_document, search_memory
from .models import (
    MAX_SCORE,
    MIN_SCORE,
    SessionQAEntry,
    check_feedback,
    check_score,
    check_user,
)
from .ratings import POSITIVE_MIN_SCORE, is_remembered

__all__ = [
    "AddFeedbackTool",
    "ClearFeedbackTool",
    "FeedbackToolkit",
    "SearchPositiveMemoryTool",
]


_T = TypeVar("_T")


def _readable(error: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in error.errors()]
    return "Error: invalid arguments: " + "; ".join(parts)


class _FeedbackTool(BaseTool):
    """What the three tools share: the store, the default session and the user."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Any
    session_id: str | None = None
    user: str | None = None
    min_score: StrictInt = POSITIVE_MIN_SCORE  # strict: True, 4.0, "4" are refused
    """The lowest score positive memory hands back (a correction always counts)."""
    handle_validation_error: Any = _readable
    handle_tool_error: Any = True

    def _session(self, session_id: str | None) -> str | None:
        """The given session, else the toolkit's, else the running thread's."""
        if session_id or self.session_id:
            return session_id or self.session_id
        config = var_child_runnable_config.get() or {}
        found = session_id_from(config.get("metadata"), None)
        if found is None:
            found = session_id_from(config.get("configurable"), None)
        return found

    def _user(self) -> str | None:
        """The toolkit's user, else the running thread's."""
        if self.user is not None:
            return self.user
        config = var_child_runnable_config.get() or {}
        return user_from(config.get("metadata"), None) or user_from_config(config)

    def _target(self, session_id: str | None) -> tuple[str, str | None]:
        """The session and user a rating is for."""
        session = self._session(session_id)
        if session is None:
            raise ToolException("Error: no session_id: pass the session of the turn")
        return session, self._user()

    def _turn(self, session: str, qa_id: str | None, user: str | None) -> str:
        """``qa_id``, else the newest recorded turn of the session."""
        if qa_id is not None:
            return qa_id
        return _newest(session, self.store.get_session(session, user=user, last_n=1))

    async def _aturn(self, session: str, qa_id: str | None, user: str | None) -> str:
        if qa_id is not None:
            return qa_id
        return _newest(session, await self.store.aget_session(session, user=user, last_n=1))

    def _guard(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run ``fn``; turn any failure into a ToolException, which LangChain hands the
        agent as the message text with ``status="error"`` (``handle_tool_error=True``)."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise _tool_error(exc) from exc

    async def _aguard(self, work: Awaitable[_T]) -> _T:
        """:meth:`_guard`, awaited."""
        try:
            return await work
        except Exception as exc:
            raise _tool_error(exc) from exc

    def _saved(self, verb: str, entry: SessionQAEntry) -> str:
        """The answer to a rating or a cleared rating: when it was recorded, and whether
        positive memory now hands the turn back."""
        when = entry.feedback_time
        at = "" if when is None else f" (recorded at {_utc(when)})"
        if is_remembered(entry, self.min_score):
            memory = "now remembered: positive memory hands it back for similar questions"
        else:
            memory = (
                f"not remembered: positive memory keeps turns rated {self.min_score} or more,"
                " or corrected"
            )
        return f"Feedback {verb} for turn {entry.qa_id}{at}. The turn is {memory}."


def _utc(when: datetime) -> str:
    """``2026-05-01T12:00:00Z``: an aware time in UTC, to the second."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _newest(session: str, newest: list[Any]) -> str:
    if not newest:
        raise ToolException(f"Error: session {session!r} has no recorded turn to rate yet")
    found: str = newest[0].qa_id
    return found


def _tool_error(exc: Exception) -> ToolException:
    """The message the agent reads for a failed call."""
    if isinstance(exc, ToolException):
        return exc
    if isinstance(exc, StoreError):  # not the model's mistake: say so, so it may retry later
        return ToolException(
            "Error: the feedback store is unavailable, try again later (nothing changed)"
        )
    if isinstance(exc, (FeedbackPluginError, ValueError, TypeError)):
        return ToolException(f"Error: {exc}")
    # anything else: tell the agent, keep the loop alive
    return ToolException(f"Error: the feedback store failed ({type(exc).__name__}: {exc})")


def _missing(qa_id: str, session: str) -> ToolException:
    return ToolException(f"Error: no turn {qa_id!r} in session {session!r} (nothing changed)")


class AddFeedbackInput(BaseModel):
    qa_id: str | None = Field(
        default=None, description="id of the chat turn to rate; defaults to the latest answer"
    )
    feedback_score: StrictInt | None = Field(
        default=None,
        description=f"rating from {MIN_SCORE} (bad) to {MAX_SCORE} (excellent)",
    )
    feedback_text: str | None = Field(default=None, description="the user's comment, if any")
    correction: str | None = Field(
        default=None, description="the right answer, if the user gave one"
    )
    session_id: str | None = Field(
        default=None, description="session of the turn; defaults to the current session"
    )


class AddFeedbackTool(_FeedbackTool):
    name: str = "add_feedback"
    description: str = (
        "Record the user's rating of an earlier answer (by default the latest one; "
        f"give qa_id for another). Give a feedback_score from {MIN_SCORE} to {MAX_SCORE}, "
        "a feedback_text comment, or both (and a correction if the user said what the "
        "right answer is)."
    )
    args_schema: type[BaseModel] = AddFeedbackInput

    def _run(
        self,
        qa_id: str | None = None,
        feedback_score: int | None = None,
        feedback_text: str | None = None,
        correction: str | None = None,
        session_id: str | None = None,
        **_: Any,
    ) -> str:
        return self._guard(self._add, qa_id, feedback_score, feedback_text, correction, session_id)

    async def _arun(
        self,
        qa_id: str | None = None,
        feedback_score: int | None = None,
        feedback_text: str | None = None,
        correction: str | None = None,
        session_id: str | None = None,
        **_: Any,
    ) -> str:
        return await self._aguard(
            self._aadd(qa_id, feedback_score, feedback_text, correction, session_id)
        )

    def _add(
        self,
        qa_id: str | None,
        score: int | None,
        text: str | None,
        correction: str | None,
        session_id: str | None,
    ) -> str:
        session, user = self._target(session_id)
        check_feedback(text, score, correction)  # a bad rating is refused before any read
        qa_id = self._turn(session, qa_id, user)
        try:
            entry = self.store.rate(session, qa_id, text, score, user=user, correction=correction)
        except TurnNotFoundError:
            raise _missing(qa_id, session) from None
        return self._saved("saved", entry)

    async def _aadd(
        self,
        qa_id: str | None,
        score: int | None,
        text: str | None,
        correction: str | None,
        session_id: str | None,
    ) -> str:
        session, user = self._target(session_id)
        check_feedback(text, score, correction)
        qa_id = await self._aturn(session, qa_id, user)
        try:
            entry = await self.store.arate(
                session, qa_id, text, score, user=user, correction=correction
            )
        except TurnNotFoundError:
            raise _missing(qa_id, session) from None
        return self._saved("saved", entry)


class ClearFeedbackInput(BaseModel):
    qa_id: str | None = Field(
        default=None,
        description="id of the chat turn whose rating to clear; defaults to the latest answer",
    )
    session_id: str | None = Field(
        default=None, description="session of the turn; defaults to the current session"
    )


class ClearFeedbackTool(_FeedbackTool):
    name: str = "clear_feedback"
    description: str = (
        "Remove the user's rating and comment from one earlier answer, e.g. when "
        "the user takes back a thumbs up or down."
    )
    args_schema: type[BaseModel] = ClearFeedbackInput

    def _run(self, qa_id: str | None = None, session_id: str | None = None, **_: Any) -> str:
        return self._guard(self._clear, qa_id, session_id)

    async def _arun(self, qa_id: str | None = None, session_id: str | None = None, **_: Any) -> str:
        return await self._aguard(self._aclear(qa_id, session_id))

    def _clear(self, qa_id: str | None, session_id: str | None) -> str:
        session, user = self._target(session_id)
        qa_id = self._turn(session, qa_id, user)
        try:
            entry = self.store.clear_rating(session, qa_id, user=user)
        except TurnNotFoundError:
            raise _missing(qa_id, session) from None
        return self._saved("cleared", entry)

    async def _aclear(self, qa_id: str | None, session_id: str | None) -> str:
        session, user = self._target(session_id)
        qa_id = await self._aturn(session, qa_id, user)
        try:
            entry = await self.store.aclear_rating(session, qa_id, user=user)
        except TurnNotFoundError:
            raise _missing(qa_id, session) from None
        return self._saved("cleared", entry)


class SearchInput(BaseModel):
    query: str = Field(description="what to look for among answers the user liked")


class SearchPositiveMemoryTool(_FeedbackTool):
    name: str = "search_positive_memory"
    description: str = (
        "Search earlier answers that this user rated positively (or corrected). "
        "Use it before answering a question the user may have asked before."
    )
    args_schema: type[BaseModel] = SearchInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    """The text the agent reads, and the memories as Documents (the message's artifact)."""
    k: int = 4

    def _run(self, query: str, **_: Any) -> tuple[str, list[Document]]:
        return self._guard(self._search, query)

    async def _arun(self, query: str, **_: Any) -> tuple[str, list[Document]]:
        return await self._aguard(self._asearch(query))

    def _search(self, query: str) -> tuple[str, list[Document]]:
        found = search_memory(
            self.store, query, k=self.k, user=self._user(), min_score=self.min_score
        )
        return _listing(found), _documents(found)

    async def _asearch(self, query: str) -> tuple[str, list[Document]]:
        found = await asearch_memory(
            self.store, query, k=self.k, user=self._user(), min_score=self.min_score
        )
        return _listing(found), _documents(found)


def _documents(found: list[tuple[SessionQAEntry, float]]) -> list[Document]:
    """Remembered turns as memory Documents (as PositiveMemoryRetriever returns them)."""
    return [entry_document(entry, relevance) for entry, relevance in found]


def _listing(found: list[tuple[SessionQAEntry, float]]) -> str:
    """Remembered turns as the text the agent reads."""
    if not found:
        return "No remembered answers match."
    lines = []
    for i, (entry, _relevance) in enumerate(found, 1):
        answer = entry.best_answer
        note = ", corrected answer given by the user" if entry.correction is not None else ""
        lines.append(
            f"{i}. Q: {entry.question}\n   A: {answer}\n"
            f"   (qa_id {entry.qa_id}, session {entry.session_id}, "
            f"score {entry.feedback_score}{note})"
        )
    return "\n".join(lines)


class FeedbackToolkit(BaseToolkit):
    """The ``add_feedback``, ``clear_feedback`` and ``search_positive_memory`` tools.

    >>> import tempfile
    >>> from feedback_plugin import SessionStore
    >>> tools = FeedbackToolkit(store=SessionStore(tempfile.mkdtemp()), session_id="s1").get_tools()
    >>> [t.name for t in tools]
    ['add_feedback', 'clear_feedback', 'search_positive_memory']
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Any
    session_id: str | None = None
    user: str | None = None
    k: int = 4
    min_score: StrictInt = POSITIVE_MIN_SCORE  # strict: True, 4.0, "4" are refused

    def model_post_init(self, context: Any) -> None:
        from .store import SessionStore

        if not isinstance(self.store, SessionStore):
            raise ArgumentTypeError(
                f"store must be a SessionStore, got {type(self.store).__name__}"
            )
        check_user(self.user)
        check_score(self.min_score)

    def get_tools(self) -> list[BaseTool]:
        shared = {
            "store": self.store,
            "session_id": self.session_id,
            "user": self.user,
            "min_score": self.min_score,
        }
        return [
            AddFeedbackTool(**shared),
            ClearFeedbackTool(**shared),
            SearchPositiveMemoryTool(**shared, k=self.k),
        ]
