"""Feedback in plain words: a chat model turns what the user said into a rating.

Modelled on MemOS's feedback API (``feedback_content`` plus the chat history;
an LLM decides what changes in memory; an optional corrected answer; sync, or
in the background with a task id)::

    result = store.process_feedback("s1", "No, it's Canberra.", user="alice", model=llm)
    result.applied, result.correction, result.remembered   # True, 'Canberra', True

What happens
    The session's newest :data:`SHOWN_TURNS` turns (``get_session(last_n=10)``)
    and the user's words go to ``model`` in one call, which answers one JSON
    object (:data:`REPLY_KEYS`): is it feedback at all (``is_feedback``), which
    turn it is about (``turn``: its number as shown, 1 the oldest shown, or its
    ``qa_id``; missing or null: the newest), a ``score`` 1-5 or ``thumbs``
    ``"up"``/``"down"`` (5/1), a ``comment``, and a ``correction`` when the user
    states the right answer. The rating is then written by the ordinary path,
    :meth:`SessionStore.rate` (the same checks, listeners, memory and
    attribution as a thumbs click). The stored comment is the model's
    ``comment``, else the user's own words.

Strict reading
    The reply must be that JSON object (a Markdown fence around it, `````json``,
    is tolerated; nothing else). It is read by a pydantic model in strict mode:
    a score of ``"4"``, ``4.0`` or ``true`` is refused, not coerced; keys it does
    not know are ignored. A reply that is not JSON, does not fit, names a turn
    that was not shown, has a score outside 1-5, or a score and thumbs that
    disagree CHANGES NOTHING: the result has ``applied=False`` and ``reason``
    says why (and carries the reply in ``model_reply``). So does
    ``is_feedback: false`` (the words are a new question, small talk...).

Detection
    ``detect=True`` is for words that may not be feedback at all (every new
    message of a conversation: :class:`~feedback_plugin.middleware.FeedbackMiddleware`'s
    ``detect_feedback``). The prompt says most messages are not feedback, and
    the reply must say ``"is_feedback": true`` itself (without ``detect`` a
    reply that leaves the key out counts as feedback: the caller said it is).

Corrected answer
    With ``corrected_answer=True`` the same call also asks for
    ``corrected_answer``: the turn's answer rewritten to follow the feedback,
    ready to show the user (one model call, not two: the model that read the
    correction writes it). A reply without one falls back to the stored
    correction; without either it is ``None``.

Errors
    Bad arguments raise before anything is read: a blank or non-string
    ``feedback_content`` :class:`InvalidFeedbackError`, a ``model`` that is
    not a LangChain runnable :class:`ArgumentTypeError`, bad ids
    :class:`InvalidIdError`. A session with no turns for this user is not an
    error: ``applied=False`` (the model is not called). A store failure raises
    :class:`StoreError`; an exception of the model itself (a rate limit, a
    timeout) propagates as the model raised it -- nothing was written.

Background
    :meth:`FeedbackInterpretation.submit_feedback` checks the arguments, returns
    a task id at once and runs :meth:`~FeedbackInterpretation.process_feedback`
    in a worker thread (:mod:`.feedback_tasks`); :meth:`feedback_task` reads its
    :class:`FeedbackTask`. Tasks live in the process that ran them (not in the
    store), are visible only to the user who submitted them, and the newest
    :data:`~.feedback_tasks.MAX_FINISHED` finished ones are kept.

The model call carries the tags ``nostream`` (LangGraph does not stream its
tokens into an agent's ``messages`` stream) and ``feedback_plugin:interpret``,
and the run name ``feedback_plugin.interpret_feedback``.

LangChain is imported only when these methods are called: the store alone
still loads none of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ArgumentTypeError, InvalidFeedbackError, TurnNotFoundError
from .models import (
    NEGATIVE_SCORE,
    POSITIVE_SCORE,
    Id,
    SessionQAEntry,
    check_feedback,
    check_id,
    check_text,
    check_user,
)

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable, RunnableConfig

    from .feedback_tasks import FeedbackTask

__all__ = [
    "INTERPRET_TAG",
    "REPLY_KEYS",
    "RUN_NAME",
    "SHOWN_TURNS",
    "TAGS",
    "FeedbackInterpretation",
    "FeedbackResult",
]

SHOWN_TURNS = 10
"""How many of the session's newest turns the model is shown."""
_SHOWN_CHARS = 2000
"""A question or answer longer than this is cut in the prompt (the store keeps it whole)."""
_EXCERPT = 200
"""How much of a bad reply a reason quotes."""

REPLY_KEYS = (
    "is_feedback",
    "turn",
    "score",
    "thumbs",
    "comment",
    "correction",
    "corrected_answer",
)
"""The keys of the model's JSON reply (``corrected_answer`` only when asked for)."""

RUN_NAME = "feedback_plugin.interpret_feedback"
"""The run name of the model call."""
INTERPRET_TAG = "feedback_plugin:interpret"
"""Marks the model call as the library's own: the callback handler never records it."""
TAGS = ("nostream", INTERPRET_TAG)
"""The tags of the model call (``nostream``: LangGraph keeps its tokens out of an agent's
``messages`` stream)."""


def _config() -> RunnableConfig:
    return {"run_name": RUN_NAME, "tags": list(TAGS)}


class FeedbackResult(BaseModel):
    """What :meth:`~FeedbackInterpretation.process_feedback` did with the user's words.

    ``applied`` is True when a rating was stored on ``qa_id``; then ``entry`` is
    the turn as stored, ``remembered`` whether positive memory now hands it back
    and ``recorded_at`` its ``feedback_time``. When ``applied`` is False nothing
    changed, ``reason`` says why, and the rating fields are ``None`` (``qa_id``
    names the turn the reply was about when that much was understood).
    """

    model_config = ConfigDict(extra="ignore")

    applied: bool
    reason: str
    session_id: str
    qa_id: str | None = None
    is_feedback: bool | None = None
    """What the model said (``None``: its reply was not understood)."""
    feedback_score: int | None = None
    feedback_text: str | None = None
    correction: str | None = None
    corrected_answer: str | None = None
    entry: SessionQAEntry | None = None
    remembered: bool = False
    recorded_at: datetime | None = None
    model_reply: str | None = None
    """The model's reply as text (``None`` when the model was not called)."""


class _Reply(BaseModel):
    """The model's JSON reply, read strictly (no coercion; unknown keys ignored)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    is_feedback: bool = True
    turn: int | str | None = None
    score: int | None = None
    thumbs: Literal["up", "down"] | None = None
    comment: str | None = None
    correction: str | None = None
    corrected_answer: str | None = None


# -- the prompt ----------------------------------------------------------------------------

_SYSTEM = """\
You read what a user said about a chat assistant's answers and turn it into a rating.
Reply with one JSON object and nothing else, with these keys:
  "is_feedback": true when the message judges or corrects one of the assistant's answers;
      false when it is something else (a new question, small talk, an instruction).
  "turn": the number of the turn the feedback is about (an integer, as numbered below),
      or its qa_id; null for the newest turn.
  "score": an integer from 1 (useless or wrong) to 5 (exactly right), or null if the user
      gives no judgement.
  "thumbs": "up" or "down" when the user only approves or disapproves, else null.
  "comment": a short note of what the user said about the answer, or null.
  "correction": the right answer when the user states it (their facts, not yours), else null.
A correction means the answer was wrong: give it a low score (1 or 2) unless the user
says the answer was partly right.{extra}"""

_CORRECTED = """
  "corrected_answer": the turn's answer rewritten to follow the feedback, as the assistant
      would now say it to the user; null when the feedback gives nothing to correct."""


_DETECT = """
The message is the user's next chat message: most such messages are not feedback. Say
"is_feedback": true only when it clearly judges or corrects an earlier answer."""


def _cut(text: str, limit: int = _SHOWN_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


def _prompt(
    turns: Sequence[SessionQAEntry], content: str, corrected: bool, detect: bool
) -> list[tuple[str, str]]:
    lines = [f"The conversation, oldest first (turn {len(turns)} is the newest):"]
    for number, entry in enumerate(turns, 1):
        lines += [
            f'<turn number="{number}" qa_id="{entry.qa_id}">',
            f"Question: {_cut(entry.question)}",
            f"Answer: {_cut(entry.answer)}",
        ]
        if entry.correction:
            lines.append(f"Correction given earlier: {_cut(entry.correction)}")
        lines.append("</turn>")
    lines += ["", "What the user said:", "<feedback>", content, "</feedback>"]
    system = _SYSTEM.format(extra=(_CORRECTED if corrected else "") + (_DETECT if detect else ""))
    return [("system", system), ("human", "\n".join(lines))]


# -- reading the reply ---------------------------------------------------------------------

_FENCE = re.compile(r"\A\s*```[A-Za-z]*[ \t]*\n?(.*?)\n?[ \t]*```\s*\Z", re.S)


def _reply_text(reply: object) -> str | None:
    if isinstance(reply, str):
        return reply
    text = getattr(reply, "text", None)  # a message: a str property (also callable, deprecated)
    return str.__str__(text) if isinstance(text, str) else None


def _excerpt(text: str) -> str:
    return repr(_cut(text.strip(), _EXCERPT))


def _read(text: str) -> _Reply | str:
    """The reply parsed, or why it cannot be."""
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text
    try:
        data = json.loads(body)
    except ValueError as exc:
        return f"the model's reply is not JSON ({exc}): {_excerpt(text)}"
    if not isinstance(data, dict):
        return f"the model's reply is not a JSON object: {_excerpt(text)}"
    try:
        return _Reply.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} "
            f"(got {_cut(repr(e.get('input')), _EXCERPT)})"
            for e in exc.errors()
        )
        return f"the model's reply does not fit: {problems}"


def _turn(turns: Sequence[SessionQAEntry], named: int | str | None) -> SessionQAEntry | str:
    """The turn the reply names among those shown, or why none."""
    if named is None:
        return turns[-1]
    if isinstance(named, int):
        if 1 <= named <= len(turns):
            return turns[named - 1]
        return f"the model named turn {named}, but the turns shown are 1 to {len(turns)}"
    for entry in turns:
        if entry.qa_id == named:
            return entry
    return f"the model named turn {named!r}, which is not one of the {len(turns)} turns shown"


class _Decision:
    """A rating the reply asks for, checked and not yet stored."""

    __slots__ = ("correction", "read", "score", "text", "turn")

    def __init__(
        self, turn: SessionQAEntry, rating: tuple[str | None, int | None, str | None], read: _Reply
    ) -> None:
        self.turn = turn
        self.text, self.score, self.correction = rating
        self.read = read


class _Plan:
    """One request: its checked arguments, the prompt, and what the reply decides."""

    def __init__(
        self,
        session_id: Id,
        content: object,
        user: object,
        model: object,
        corrected: object,
        detect: object,
    ) -> None:
        from langchain_core.runnables import Runnable

        self.session_id = check_id(session_id)
        self.user = check_user(user)
        text = check_text(content, "feedback_content")
        if not text.strip():
            raise InvalidFeedbackError("feedback_content must not be blank")
        self.content = text.strip()
        if not isinstance(model, Runnable):
            raise ArgumentTypeError(
                f"model must be a LangChain chat model (a Runnable), got {type(model).__name__}"
            )
        if type(corrected) is not bool:
            raise ArgumentTypeError(
                f"corrected_answer must be a bool, got {type(corrected).__name__}"
            )
        if type(detect) is not bool:
            raise ArgumentTypeError(f"detect must be a bool, got {type(detect).__name__}")
        self.corrected = corrected
        self.detect = detect
        self.reply: str | None = None

    def refused(self, reason: str, **fields: Any) -> FeedbackResult:
        return FeedbackResult(
            applied=False,
            reason=reason,
            session_id=self.session_id,
            model_reply=self.reply,
            **fields,
        )

    def empty(self) -> FeedbackResult:
        return self.refused(
            f"no turns in session {self.session_id!r} for this user: nothing to give feedback on"
        )

    def prompt(self, turns: Sequence[SessionQAEntry]) -> list[tuple[str, str]]:
        return _prompt(turns, self.content, self.corrected, self.detect)

    def decide(self, turns: Sequence[SessionQAEntry], reply: object) -> _Decision | FeedbackResult:
        """The rating the reply asks for, or the refusal that says why there is none."""
        self.reply = text = _reply_text(reply)
        if text is None:
            return self.refused(f"the model's reply is not text ({type(reply).__name__})")
        read = _read(text)
        if isinstance(read, str):
            return self.refused(read)
        if not read.is_feedback:
            return self.refused(
                "the model found no feedback on an answer in these words", is_feedback=False
            )
        if self.detect and "is_feedback" not in read.model_fields_set:
            return self.refused("the model's reply does not say is_feedback (detect=True)")
        turn = _turn(turns, read.turn)
        if isinstance(turn, str):
            return self.refused(turn, is_feedback=True)
        about = {"qa_id": turn.qa_id, "is_feedback": True}
        score: object = read.score
        if read.thumbs is not None:
            thumb = POSITIVE_SCORE if read.thumbs == "up" else NEGATIVE_SCORE
            if score is not None and score != thumb:
                reason = f"the model's score {score} and thumbs {read.thumbs!r} disagree"
                return self.refused(reason, **about)
            score = thumb
        comment = read.comment if read.comment and read.comment.strip() else self.content
        try:
            rating = check_feedback(comment, score, read.correction)
        except InvalidFeedbackError as exc:
            return self.refused(f"the model's rating cannot be stored: {exc}", **about)
        return _Decision(turn, rating, read)

    def gone(self, decision: _Decision) -> FeedbackResult:
        qa_id = decision.turn.qa_id
        return self.refused(f"turn {qa_id!r} was deleted meanwhile", qa_id=qa_id, is_feedback=True)

    def applied(
        self, turns: Sequence[SessionQAEntry], decision: _Decision, entry: SessionQAEntry
    ) -> FeedbackResult:
        number = next(i for i, t in enumerate(turns, 1) if t.qa_id == entry.qa_id)
        corrected = None
        if self.corrected:
            given = decision.read.corrected_answer
            corrected = given if given and given.strip() else entry.correction
        return FeedbackResult(
            applied=True,
            reason=f"feedback stored on turn {number} of the {len(turns)} shown",
            session_id=self.session_id,
            qa_id=entry.qa_id,
            is_feedback=True,
            feedback_score=entry.feedback_score,
            feedback_text=entry.feedback_text,
            correction=entry.correction,
            corrected_answer=corrected,
            entry=entry,
            remembered=entry.remembered,
            recorded_at=entry.feedback_time,
            model_reply=self.reply,
        )


class _Store(Protocol):
    """What these methods need of the store they are mixed into."""

    def get_session(
        self, session_id: Id, *, user: str | None = None, last_n: int | None = None
    ) -> list[SessionQAEntry]: ...
    async def aget_session(
        self, session_id: Id, *, user: str | None = None, last_n: int | None = None
    ) -> list[SessionQAEntry]: ...
    def rate(
        self,
        session_id: Id,
        qa_id: Id,
        feedback_text: str | None = None,
        feedback_score: int | None = None,
        *,
        user: str | None = None,
        correction: str | None = None,
    ) -> SessionQAEntry: ...
    async def arate(
        self,
        session_id: Id,
        qa_id: Id,
        feedback_text: str | None = None,
        feedback_score: int | None = None,
        *,
        user: str | None = None,
        correction: str | None = None,
    ) -> SessionQAEntry: ...
    def process_feedback(
        self,
        session_id: Id,
        feedback_content: str,
        *,
        user: str | None = None,
        model: Runnable[Any, Any],
        corrected_answer: bool = False,
        detect: bool = False,
    ) -> FeedbackResult: ...


class FeedbackInterpretation:
    """Feedback in plain words (mixed into :class:`~feedback_plugin.SessionStore`)."""

    def process_feedback(
        self: _Store,
        session_id: Id,
        feedback_content: str,
        *,
        user: str | None = None,
        model: Runnable[Any, Any],
        corrected_answer: bool = False,
        detect: bool = False,
    ) -> FeedbackResult:
        """Let ``model`` read the user's words against the session's newest turns and
        store the rating it finds through :meth:`rate` (see :mod:`.interpretation`).

        ``model``: any LangChain chat model (or runnable answering text);
        ``corrected_answer``: also ask it for the answer rewritten;
        ``detect``: the words may not be feedback at all (see the module docs).
        Returns a :class:`FeedbackResult`; ``applied=False`` (nothing changed) with
        the ``reason`` when the session is empty, the words are not feedback, or the
        model's reply is not a valid rating of a shown turn. Raises for bad arguments
        (:class:`InvalidFeedbackError` for blank words, :class:`ArgumentTypeError`),
        :class:`StoreError`, and whatever the model raises.
        """
        plan = _Plan(session_id, feedback_content, user, model, corrected_answer, detect)
        turns = self.get_session(plan.session_id, user=plan.user, last_n=SHOWN_TURNS)
        if not turns:
            return plan.empty()
        decided = plan.decide(turns, model.invoke(plan.prompt(turns), config=_config()))
        if isinstance(decided, FeedbackResult):
            return decided
        try:
            entry = self.rate(
                plan.session_id,
                decided.turn.qa_id,
                decided.text,
                decided.score,
                user=plan.user,
                correction=decided.correction,
            )
        except TurnNotFoundError:
            return plan.gone(decided)
        return plan.applied(turns, decided, entry)

    async def aprocess_feedback(
        self: _Store,
        session_id: Id,
        feedback_content: str,
        *,
        user: str | None = None,
        model: Runnable[Any, Any],
        corrected_answer: bool = False,
        detect: bool = False,
    ) -> FeedbackResult:
        """:meth:`process_feedback`, awaited (the model through ``ainvoke``)."""
        plan = _Plan(session_id, feedback_content, user, model, corrected_answer, detect)
        turns = await self.aget_session(plan.session_id, user=plan.user, last_n=SHOWN_TURNS)
        if not turns:
            return plan.empty()
        reply = await model.ainvoke(plan.prompt(turns), config=_config())
        decided = plan.decide(turns, reply)
        if isinstance(decided, FeedbackResult):
            return decided
        try:
            entry = await self.arate(
                plan.session_id,
                decided.turn.qa_id,
                decided.text,
                decided.score,
                user=plan.user,
                correction=decided.correction,
            )
        except TurnNotFoundError:
            return plan.gone(decided)
        return plan.applied(turns, decided, entry)

    def submit_feedback(
        self: _Store,
        session_id: Id,
        feedback_content: str,
        *,
        user: str | None = None,
        model: Runnable[Any, Any],
        corrected_answer: bool = False,
        detect: bool = False,
    ) -> str:
        """:meth:`process_feedback` in the background: check the arguments (raising as
        it does), return a task id at once; read the task with :meth:`feedback_task`."""
        from .feedback_tasks import board

        plan = _Plan(session_id, feedback_content, user, model, corrected_answer, detect)

        def work() -> FeedbackResult:
            return self.process_feedback(
                plan.session_id,
                plan.content,
                user=plan.user,
                model=model,
                corrected_answer=corrected_answer,
                detect=detect,
            )

        return board(self).submit(plan.user, plan.session_id, work)

    def feedback_task(self, task_id: str, *, user: str | None = None) -> FeedbackTask | None:
        """A task :meth:`submit_feedback` started in this process, as it stands now;
        ``None`` for an unknown task, one dropped (only the newest finished ones are
        kept), or another user's."""
        from .feedback_tasks import board

        return board(self).get(check_id(task_id, "task_id"), check_user(user))
