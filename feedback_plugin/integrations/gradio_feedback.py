"""Gradio adapter: a ``Chatbot.like`` handler that writes 👍 / 👎 to the store.

Install with ``pip install "feedback-plugin[gradio]"``.

Which turn was liked? ``gr.LikeData`` carries the message's position in the
chat (``index``), its content (``value``) and the click (``liked``), but not
our ``qa_id``. The adapter keeps that link itself: a :class:`ChatTurns`
object in a ``gr.State`` maps each answer's chat position to the ``qa_id``
of the turn that produced it (the app adds the pair when it shows the
answer), and carries the browser session's ``session_id`` and ``user``::

    turns = gr.State(ChatTurns)        # a callable: a fresh ChatTurns per browser session
    ...
    def respond(message, history, turns):
        run_id = uuid.uuid4()          # qa_id = str(run_id)
        answer = chain.invoke(message, config={"run_id": run_id, "callbacks": [handler],
                                               "metadata": {"session_id": turns.session_id}})
        history = [*history, {"role": "user", "content": message},
                   {"role": "assistant", "content": answer}]
        turns.add(len(history) - 1, str(run_id))
        return history, turns

    chatbot.like(like_handler(store), inputs=turns)

Why not look the turn up by position in ``store.get_session``? Positions in
the chat and in the stored session drift apart as soon as they do not start
together (a reloaded page with an empty chat but an old session id, a
"retry" or "undo", an answer spread over several messages, a turn recorded
by another part of the app), and then a click would silently rate the wrong
answer. An explicit map cannot.

``liked`` as Gradio 6's chatbot sends it (read from its frontend):
``True`` (👍 → score 5), ``False`` (👎 → score 1), ``""`` when the user
clicks the selected thumb again to take it back
(→ :meth:`~feedback_plugin.SessionStore.delete_feedback`), or the text of a
custom ``feedback_options`` choice (stored as the comment; the score is
left as it is).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

try:
    import gradio as gr
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'the Gradio adapter needs Gradio: pip install "feedback-plugin[gradio]"'
    ) from exc

from ..errors import InvalidArgumentError, InvalidFeedbackError
from ..models import check_id, check_user

if TYPE_CHECKING:
    from ..store import SessionStore

__all__ = ["ChatTurns", "like_handler", "record_like"]

log = logging.getLogger("feedback_plugin")


class ChatTurns:
    """One browser session's chat: its session id, user, and answer position → ``qa_id``.

    Keep it in ``gr.State(ChatTurns)`` (pass the class: Gradio calls it for
    every browser session, so each gets its own, with a new ``session_id``).
    A plain class, not a dataclass, because Gradio serialises dataclass
    state values into the page config.

    >>> turns = ChatTurns(session_id="s1")
    >>> turns.add(1, "qa-1")
    >>> turns.qa_id_at(1), turns.qa_id_at(0)
    ('qa-1', None)
    """

    def __init__(
        self,
        session_id: str | None = None,
        *,
        user: str | None = None,
        qa_ids: Mapping[int, str] | None = None,
    ) -> None:
        self.session_id: str = str(uuid.uuid4()) if session_id is None else check_id(session_id)
        self.user: str | None = check_user(user)
        self.qa_ids: dict[int, str] = {}
        """Chat message position (``LikeData.index``) → ``qa_id`` of the answer shown there."""
        for index, qa_id in (qa_ids or {}).items():
            self.add(index, qa_id)

    def __repr__(self) -> str:
        return f"ChatTurns({self.session_id!r}, user={self.user!r}, qa_ids={self.qa_ids!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChatTurns):
            return NotImplemented
        return (self.session_id, self.user, self.qa_ids) == (
            other.session_id,
            other.user,
            other.qa_ids,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def add(self, index: int, qa_id: str) -> None:
        """Say that the answer at chat position ``index`` is turn ``qa_id``.

        For an answer spread over several messages, add each of their positions.
        """
        if type(index) is not int or index < 0:
            raise InvalidArgumentError(f"index must be an int >= 0, got {index!r}")
        self.qa_ids[index] = check_id(qa_id, "qa_id")

    def qa_id_at(self, index: int | Sequence[int]) -> str | None:
        """The ``qa_id`` shown at ``LikeData.index`` (a row index for 2-D indexes)."""
        key = _position(index)
        return None if key is None else self.qa_ids.get(key)

    def forget_after(self, length: int) -> None:
        """Drop positions ``>= length`` (after a chat was cleared, undone or retried)."""
        for key in [k for k in self.qa_ids if k >= length]:
            del self.qa_ids[key]


def _position(index: object) -> int | None:
    if type(index) is int:
        return index
    if isinstance(index, Sequence) and index and type(index[0]) is int:
        return index[0]  # legacy (row, column) indexes
    return None


def record_like(
    store: SessionStore,
    session_id: str,
    qa_id: str,
    liked: bool | str | None,
    *,
    user: str | None = None,
) -> bool:
    """Store one ``LikeData.liked`` value for a turn; return what the store returned.

    ``True`` → thumbs up, ``False`` → thumbs down, ``""`` or ``None`` (the
    like was taken back) → rating cleared, any other string (a custom
    feedback option) → stored as the comment, score unchanged.
    """
    if liked is True or liked is False:
        return store.thumbs(session_id, qa_id, up=liked, user=user)
    if liked is None or liked == "":
        return store.delete_feedback(session_id, qa_id, user=user)
    if isinstance(liked, str):
        return store.add_feedback(session_id, qa_id, feedback_text=liked, user=user)
    raise InvalidFeedbackError(
        f"LikeData.liked must be True, False or a string, got {liked!r} ({type(liked).__name__})"
    )


TurnMap = ChatTurns | Mapping[int, str] | Sequence[str | None]


def like_handler(
    store: SessionStore,
    *,
    session_id: str | None = None,
    user: str | None = None,
) -> Callable[..., None]:
    """A function for ``chatbot.like(fn, inputs=turns_state)``.

    The returned ``fn(data: gr.LikeData, turns)`` finds the liked answer's
    ``qa_id`` in ``turns`` (the value of the ``gr.State`` given as input) and
    writes the click to ``store`` (see :func:`record_like`).

    ``turns`` is normally a :class:`ChatTurns`; a plain ``{position: qa_id}``
    dict or a list indexed by position (``None`` for user messages) works
    too, and then ``session_id`` must be given here.

    Args:
        store: where the ratings go.
        session_id: the session of every turn (overrides ``ChatTurns.session_id``;
            required when ``turns`` is a dict or a list).
        user: the turns' owner when ``ChatTurns.user`` is ``None``.

    A click that cannot be stored (position not mapped, turn not found, store
    down) is logged as a warning and never raises into Gradio: the chat goes on.
    """
    if session_id is not None:
        check_id(session_id)
    default_user = check_user(user)

    def on_like(data: gr.LikeData, turns: TurnMap | None = None) -> None:
        where = _resolve(data, turns, session_id, default_user)
        if where is None:
            log.warning(
                "feedback_plugin: no turn known at chat position %r; like %r not stored",
                data.index,
                data.liked,
            )
            return
        sid, qa_id, owner = where
        try:
            ok = record_like(store, sid, qa_id, data.liked, user=owner)
        except ValueError:
            log.warning("feedback_plugin: like %r on %r not stored", data.liked, qa_id)
            return
        if not ok:
            log.warning(
                "feedback_plugin: like on %r/%r not stored (no such turn for this user, "
                "or the store is unavailable)",
                sid,
                qa_id,
            )

    on_like.__name__ = "feedback_like"
    return on_like


def _resolve(
    data: gr.LikeData,
    turns: TurnMap | None,
    session_id: str | None,
    user: str | None,
) -> tuple[str, str, str | None] | None:
    position = _position(data.index)
    if position is None:
        return None
    qa_id: Any
    sid: str | None
    if isinstance(turns, ChatTurns):
        qa_id = turns.qa_id_at(position)
        sid = session_id or turns.session_id
        owner = turns.user if turns.user is not None else user
    elif isinstance(turns, Mapping):
        qa_id, sid, owner = turns.get(position), session_id, user
    elif isinstance(turns, Sequence) and not isinstance(turns, str):
        qa_id = turns[position] if position < len(turns) else None
        sid, owner = session_id, user
    else:
        return None
    if not isinstance(qa_id, str) or not qa_id or sid is None:
        return None
    return sid, qa_id, owner
