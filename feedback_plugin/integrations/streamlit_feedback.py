"""Streamlit adapter: ``st.feedback`` values in, store ratings out.

Install with ``pip install "feedback-plugin[streamlit]"``.

``st.feedback`` returns an option index, never a score:

=========== ============ ==============================================
``kind``    widget value what the store gets
=========== ============ ==============================================
``thumbs``  ``0`` / ``1`` thumbs down (score 1) / thumbs up (score 5)
``stars``   ``0`` .. ``4`` score ``value + 1`` (1..5)
``faces``   ``0`` .. ``4`` score ``value + 1`` (1..5)
any         ``None``     the rating is cleared (:meth:`~SessionStore.delete_feedback`)
=========== ============ ==============================================

:func:`record_st_feedback` does the mapping and needs no Streamlit;
:func:`feedback_widget` draws the widget under an answer and writes every
change to the store from the widget's ``on_change`` callback::

    from feedback_plugin.integrations.streamlit_feedback import feedback_widget

    with st.chat_message("assistant"):
        st.markdown(answer)
        feedback_widget(store, session_id, qa_id)          # 👍 / 👎

The ``qa_id`` is ``str(run_id)`` of the chain run that produced the answer
(pass ``config={"run_id": run_id}`` to the chain, see
:class:`~feedback_plugin.FeedbackCallbackHandler`).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ..errors import InvalidArgumentError, InvalidFeedbackError
from ..models import check_id
from ..ratings import is_negative, is_positive

if TYPE_CHECKING:
    from ..store import SessionStore

__all__ = ["FeedbackKind", "feedback_widget", "record_st_feedback", "widget_value_for"]

log = logging.getLogger("feedback_plugin")

FeedbackKind = Literal["thumbs", "stars", "faces"]
"""The ``options`` argument of ``st.feedback``."""

_NUM_OPTIONS: dict[str, int] = {"thumbs": 2, "stars": 5, "faces": 5}


def _check_kind(kind: object) -> int:
    try:
        return _NUM_OPTIONS[kind]  # type: ignore[index]
    except (KeyError, TypeError):
        raise InvalidArgumentError(
            f"kind must be 'thumbs', 'stars' or 'faces', got {kind!r}"
        ) from None


def record_st_feedback(
    store: SessionStore,
    session_id: str,
    qa_id: str,
    value: int | None,
    *,
    kind: FeedbackKind = "thumbs",
    text: str | None = None,
    user: str | None = None,
) -> bool:
    """Store one ``st.feedback`` value for a turn; return what the store returned.

    ``value`` is what the widget returns: ``0``/``1`` for thumbs, ``0``..``4``
    for stars and faces, ``None`` when the user cleared it (which clears the
    turn's rating, comment included). ``text`` is an optional comment stored
    with the rating. Returns ``False`` when the turn does not exist for this
    user or the store is unavailable; raises :class:`InvalidFeedbackError` for
    a value the widget cannot produce (nothing is written then).

    >>> import tempfile
    >>> from feedback_plugin import SessionStore
    >>> store = SessionStore(tempfile.mkdtemp())
    >>> turn = store.record("s1", "Hi?", "Hello.")
    >>> record_st_feedback(store, "s1", turn.qa_id, 3, kind="stars")
    True
    >>> store.get_entry("s1", turn.qa_id).feedback_score
    4
    >>> store.close()
    """
    num_options = _check_kind(kind)
    check_id(session_id)
    check_id(qa_id, "qa_id")
    if value is None:
        return store.delete_feedback(session_id, qa_id, user=user)
    if type(value) is not int or not 0 <= value < num_options:
        # bool is refused too: st.feedback never returns True/False.
        raise InvalidFeedbackError(
            f"st.feedback({kind!r}) values are ints 0..{num_options - 1} or None, "
            f"got {value!r} ({type(value).__name__})"
        )
    if kind == "thumbs":
        return store.thumbs(session_id, qa_id, up=value == 1, feedback_text=text, user=user)
    return store.add_feedback(session_id, qa_id, text, value + 1, user=user)


def widget_value_for(score: int | None, kind: FeedbackKind = "thumbs") -> int | None:
    """The ``st.feedback`` value that shows a stored score (the inverse mapping).

    Thumbs show up for a positive score (4–5), down for a negative one (1–2)
    and nothing for 3 (:mod:`feedback_plugin.ratings`); stars and faces show ``score - 1``.

    >>> [widget_value_for(s) for s in (None, 1, 2, 3, 4, 5)]
    [None, 0, 0, None, 1, 1]
    >>> widget_value_for(4, "stars")
    3
    """
    _check_kind(kind)
    if score is None:
        return None
    if kind != "thumbs":
        return score - 1
    if is_positive(score):
        return 1
    if is_negative(score):
        return 0
    return None


def feedback_widget(
    store: SessionStore,
    session_id: str,
    qa_id: str,
    *,
    kind: FeedbackKind = "thumbs",
    key: str | None = None,
    user: str | None = None,
    text: str | None = None,
    show_stored: bool = True,
    disabled: bool = False,
) -> int | None:
    """Draw ``st.feedback(kind)`` for one turn; every change is written to the store.

    The write happens in the widget's ``on_change`` callback, so it runs once
    per click, before the rerun, and not on every rerun. Clicking the selected
    option again clears the widget and the turn's rating.

    Args:
        store, session_id, qa_id, user: the turn being rated.
        kind: ``"thumbs"``, ``"stars"`` or ``"faces"``.
        key: the widget key (default ``f"feedback_{kind}_{qa_id}"``); the
            widget's value is in ``st.session_state[key]``.
        text: a comment stored with each rating.
        show_stored: start the widget at the turn's stored rating (so ratings
            survive a page reload or a new browser session); costs one store
            read per widget per rerun. Needs a Streamlit whose ``st.feedback``
            takes ``default`` (1.67 does; 1.39 did not).
        disabled: show the widget read-only.

    Returns:
        The widget's current value, as ``st.feedback`` returns it.
    """
    import streamlit as st

    _check_kind(kind)
    check_id(session_id)
    check_id(qa_id, "qa_id")
    widget_key = key if key is not None else f"feedback_{kind}_{qa_id}"

    default = None
    if show_stored:
        try:
            entry = store.get_entry(session_id, qa_id, user=user)
        except Exception:  # a failing store must not break the page
            log.exception("feedback_plugin: could not read the rating of %r", qa_id)
            entry = None
        if entry is not None:
            default = widget_value_for(entry.feedback_score, kind)

    def on_change() -> None:
        value = st.session_state.get(widget_key)
        if not record_st_feedback(store, session_id, qa_id, value, kind=kind, text=text, user=user):
            log.warning(
                "feedback_plugin: feedback on %r/%r not stored (no such turn, or the "
                "store is unavailable)",
                session_id,
                qa_id,
            )

    options: dict[str, Any] = {"key": widget_key, "disabled": disabled, "on_change": on_change}
    if default is not None and _takes_default(st.feedback):
        options["default"] = default  # st.feedback(default=...) is newer than st.feedback
    value: int | None = st.feedback(kind, **options)
    return value


@functools.cache
def _takes_default(feedback: Callable[..., Any]) -> bool:
    try:
        return "default" in inspect.signature(feedback).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False
