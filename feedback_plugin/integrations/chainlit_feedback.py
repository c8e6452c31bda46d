"""Chainlit adapter: a data layer whose 👍 / 👎 go to a feedback_plugin store.

Install with ``pip install "feedback-plugin[chainlit]"``.

Chainlit shows feedback buttons under answers only when a data layer is
configured, and hands every click to it: ``upsert_feedback(Feedback)`` with
``forId``, ``threadId``, ``value`` (``1`` 👍, ``0`` 👎) and an optional
``comment``; ``delete_feedback(feedback_id)`` when the user takes the rating
back. :class:`FeedbackDataLayer` turns these into
:meth:`~feedback_plugin.SessionStore.thumbs` (comment → ``feedback_text``)
and :meth:`~feedback_plugin.SessionStore.delete_feedback`.

**Which turn does a click rate?** In Chainlit 2.x ``forId`` is the id of the
*run step* Chainlit wraps around the ``on_message`` handler (the buttons sit
under its last message), not the id of the answer message. The app links
that run to the turn's ``qa_id`` with one call::

    feedback_layer = FeedbackDataLayer(store)

    @cl.data_layer
    def data_layer():
        return feedback_layer

    @cl.on_message
    async def on_message(message: cl.Message):
        run_id = uuid.uuid4()                       # the turn's qa_id is str(run_id)
        answer = await chain.ainvoke(message.content, config={
            "run_id": run_id, "callbacks": [handler],
            "metadata": {"session_id": cl.context.session.thread_id}})
        feedback_layer.register_run(run_id)         # this run's 👍 / 👎 rate that turn
        await cl.Message(content=answer).send()

Without a registration the data layer still finds the turn when its
``qa_id`` is the run step's id or the id of a message sent inside the run
(``cl.Message(..., id=str(run_id))``), in the session named by the run's
thread (seen server-side in :meth:`create_step`; the browser's
``Feedback.threadId`` only when that is unknown). Registration avoids id
games, which collide with Chainlit's own LangChain tracer (it names its
steps after LangChain run ids).

**User.** A registration's ``user`` (:meth:`register_run`: the logged-in
user's identifier); else the user Chainlit attached to the thread
(:meth:`update_thread`; :meth:`get_user` / :meth:`create_user` make that id
the login identifier); else the data layer's own ``user``. Record turns with
``metadata={"user_id": user.identifier}`` to match.

Everything else a data layer does (threads, steps, elements, users) is a
no-op here, so the chat history sidebar stays empty -- unless ``inner`` is
another data layer (e.g. Chainlit's SQLAlchemy one): then every call is
forwarded to it and feedback goes to both.

The step → turn links live in this process's memory (bounded, newest kept):
one Chainlit server process, as Chainlit itself runs. Like Chainlit's own
data layers, the adapter trusts the step id the browser sends with a click;
step ids are random UUIDs.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

try:
    from chainlit.data.base import BaseDataLayer
    from chainlit.data.utils import queue_until_user_message as _queue_until_user_message
    from chainlit.types import Feedback, PageInfo, PaginatedResponse, Pagination, ThreadFilter
    from chainlit.user import PersistedUser, User
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'the Chainlit adapter needs Chainlit: pip install "feedback-plugin[chainlit]"'
    ) from exc

from ..errors import (
    ConfigurationError,
    InvalidArgumentError,
    InvalidFeedbackError,
    TurnNotFoundError,
)
from ..models import check_id, check_user

if TYPE_CHECKING:
    from chainlit.element import Element, ElementDict
    from chainlit.step import StepDict
    from chainlit.types import ThreadDict

    from ..store import SessionStore

__all__ = ["FeedbackDataLayer", "TurnNotFoundError", "TurnRef"]

log = logging.getLogger("feedback_plugin")

K = TypeVar("K")
V = TypeVar("V")
F = TypeVar("F", bound=Callable[..., Any])
_QUEUE_UNTIL_USER_MESSAGE: Any = _queue_until_user_message  # untyped in Chainlit


def _queued(method: F) -> F:
    """Chainlit's ``@queue_until_user_message()``, as on ``BaseDataLayer``'s own methods.

    Chainlit creates a thread only at the first user message; steps and
    elements sent before it wait in the session's queue (so an ``inner``
    data layer sees them in the same order as without this adapter).
    """
    return cast(F, _QUEUE_UNTIL_USER_MESSAGE()(method))


@dataclass(frozen=True)
class TurnRef:
    """The recorded turn a click on a Chainlit step rates."""

    session_id: str
    qa_id: str
    user: str | None = None


class _Bounded(Generic[K, V]):
    """A dict that forgets its oldest keys beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def set(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.limit:
            self._data.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def drop_values(self, value: V) -> None:
        for key in [k for k, v in self._data.items() if v == value]:
            del self._data[key]

    def __len__(self) -> int:
        return len(self._data)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class FeedbackDataLayer(BaseDataLayer):
    """A Chainlit data layer that writes message feedback to a :class:`SessionStore`.

    Args:
        store: where ratings go (the store the app's ``FeedbackCallbackHandler`` records to).
        user: owner of the turns when neither a registration nor the thread names one.
        inner: another data layer to forward every call to (persistence, history).
        max_messages: how many step → turn links to keep in memory.
    """

    def __init__(
        self,
        store: SessionStore,
        *,
        user: str | None = None,
        inner: BaseDataLayer | None = None,
        max_messages: int = 100_000,
    ) -> None:
        if type(max_messages) is not int or max_messages < 1:
            raise InvalidArgumentError(f"max_messages must be an int >= 1, got {max_messages!r}")
        self.store = store
        self.user = check_user(user)
        self.inner = inner
        self._registered: _Bounded[str, TurnRef] = _Bounded(max_messages)
        self._thread_of: _Bounded[str, str] = _Bounded(max_messages)  # step id -> thread
        self._children: _Bounded[str, tuple[str, ...]] = _Bounded(max_messages)  # step -> kids
        self._thread_user: _Bounded[str, str] = _Bounded(max_messages)
        self._rated: _Bounded[str, TurnRef] = _Bounded(max_messages)  # feedback id -> turn

    def __repr__(self) -> str:
        return f"FeedbackDataLayer({self.store!r}, inner={self.inner!r})"

    # -- the step -> turn map ----------------------------------------------------------

    def register(
        self,
        step_id: str,
        *,
        session_id: str,
        qa_id: str | None = None,
        user: str | None = None,
    ) -> TurnRef:
        """Say that feedback on Chainlit step ``step_id`` rates turn ``qa_id`` of ``session_id``.

        ``qa_id`` defaults to ``step_id``. Inside an ``on_message`` handler,
        :meth:`register_run` fills in the step, session and user for you.
        """
        check_id(step_id, "step_id")
        ref = TurnRef(
            session_id=check_id(session_id),
            qa_id=check_id(qa_id if qa_id is not None else step_id, "qa_id"),
            user=check_user(user),
        )
        self._registered.set(step_id, ref)
        return ref

    def register_run(
        self,
        qa_id: str | uuid.UUID,
        *,
        session_id: str | None = None,
        user: str | None = None,
    ) -> TurnRef:
        """Link the Chainlit run being answered to turn ``qa_id`` (call it in ``on_message``).

        Chainlit (2.x) puts the feedback buttons on the *run* step that wraps
        the ``on_message`` handler, so ``Feedback.forId`` is that step's id,
        not the answer message's. ``session_id`` defaults to the Chainlit
        thread, ``user`` to the logged-in user's identifier.
        """
        from chainlit.context import context

        run = context.current_run
        if run is None:
            raise ConfigurationError(
                "register_run() needs a Chainlit run: call it inside on_message"
            )
        if session_id is None:
            session_id = context.session.thread_id
        if user is None:
            user = getattr(context.session.user, "identifier", None)
        return self.register(run.id, session_id=session_id, qa_id=str(qa_id), user=user)

    def turns_for(self, step_id: str, thread_id: str | None = None) -> list[TurnRef]:
        """The turns a click on ``step_id`` may rate, most likely first; ``[]`` if none.

        A registered step gives its turn. Otherwise the step's thread is the
        session (the thread seen server-side in :meth:`create_step`; the
        browser's ``Feedback.threadId`` only when that is unknown) and the
        candidates are the step itself and the messages sent inside it,
        newest first, so both ``run_id == run step id`` and
        ``run_id == answer message id`` find their turn.
        """
        if not step_id:
            return []
        thread = self._thread_of.get(step_id)
        ref = self._registered.get(step_id)
        if ref is not None:
            if ref.user is not None:
                return [ref]
            return [TurnRef(ref.session_id, ref.qa_id, self._user_of(thread or ref.session_id))]
        thread = thread or thread_id
        if not thread:
            return []
        user = self._user_of(thread)
        kids = self._children.get(step_id) or ()
        return [TurnRef(thread, qa_id, user) for qa_id in (step_id, *reversed(kids))]

    def _user_of(self, thread_id: str) -> str | None:
        return self._thread_user.get(thread_id) or self.user

    def _seen(self, step_dict: StepDict) -> None:
        step_id, thread_id = step_dict.get("id"), step_dict.get("threadId")
        if not step_id:
            return
        if thread_id and self._thread_of.get(step_id) is None:
            self._thread_of.set(step_id, thread_id)  # first seen wins
        parent = step_dict.get("parentId")
        # A step sent by the browser (a user message) is never a turn's child.
        if parent and step_dict.get("type") != "user_message":
            kids = self._children.get(parent) or ()
            if step_id not in kids:
                self._children.set(parent, (*kids, step_id)[-32:])

    # -- feedback ----------------------------------------------------------------------

    async def upsert_feedback(self, feedback: Feedback) -> str:
        """Store 👍 (``value`` 1) or 👎 (``value`` 0) and the comment; return the feedback id.

        The id is ``forId`` (one rating per step), or the inner data layer's
        id. Raises :class:`InvalidFeedbackError` for another value and
        :class:`TurnNotFoundError` when the step is not a recorded turn
        (without an inner data layer; with one, that is only logged).
        """
        value: object = feedback.value  # validated by Chainlit, but may be reassigned
        if type(value) is not int or value not in (0, 1):
            raise InvalidFeedbackError(f"Feedback.value must be 0 or 1, got {value!r}")
        feedback_id = feedback.id or feedback.forId
        if self.inner is not None:
            feedback_id = await self.inner.upsert_feedback(feedback)
        for ref in self.turns_for(feedback.forId, feedback.threadId):
            stored = await asyncio.to_thread(
                self.store.thumbs,
                ref.session_id,
                ref.qa_id,
                value == 1,
                feedback.comment,
                user=ref.user,
            )
            if stored:
                self._rated.set(feedback_id, ref)
                return feedback_id
        if self.inner is None:
            raise TurnNotFoundError(
                f"step {feedback.forId!r} is not a recorded turn; feedback not stored"
            )
        log.warning("feedback_plugin: step %r is not a recorded turn", feedback.forId)
        return feedback_id

    async def delete_feedback(self, feedback_id: str) -> bool:
        """Clear the rating (score and comment) given with ``feedback_id``."""
        known = self._rated.pop(feedback_id)
        refs = [known] if known is not None else self.turns_for(feedback_id)
        inner_ok = True
        if self.inner is not None:
            inner_ok = bool(await self.inner.delete_feedback(feedback_id))
        for ref in refs:
            if await asyncio.to_thread(
                self.store.delete_feedback, ref.session_id, ref.qa_id, user=ref.user
            ):
                return inner_ok
        log.warning("feedback_plugin: feedback %r is not known; nothing cleared", feedback_id)
        return False if self.inner is None else inner_ok

    # -- steps and threads: learn where messages live, forward to inner ------------------

    @_queued
    async def create_step(self, step_dict: StepDict) -> None:
        self._seen(step_dict)
        if self.inner is not None:
            await self.inner.create_step(step_dict)

    @_queued
    async def update_step(self, step_dict: StepDict) -> None:
        self._seen(step_dict)
        if self.inner is not None:
            await self.inner.update_step(step_dict)

    @_queued
    async def delete_step(self, step_id: str) -> None:
        self._thread_of.pop(step_id)
        self._children.pop(step_id)
        if self.inner is not None:
            await self.inner.delete_step(step_id)

    async def update_thread(
        self,
        thread_id: str,
        name: str | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: list[str] | None = None,
    ) -> None:
        if user_id:
            self._thread_user.set(thread_id, user_id)
        if self.inner is not None:
            await self.inner.update_thread(thread_id, name, user_id, metadata, tags)

    async def delete_thread(self, thread_id: str) -> None:
        self._thread_user.pop(thread_id)
        self._thread_of.drop_values(thread_id)
        if self.inner is not None:
            await self.inner.delete_thread(thread_id)

    async def get_thread_author(self, thread_id: str) -> str:
        if self.inner is not None:
            return await self.inner.get_thread_author(thread_id)
        return self._thread_user.get(thread_id) or ""

    async def list_threads(
        self, pagination: Pagination, filters: ThreadFilter
    ) -> PaginatedResponse[ThreadDict]:
        if self.inner is not None:
            return await self.inner.list_threads(pagination, filters)
        return PaginatedResponse(
            pageInfo=PageInfo(hasNextPage=False, startCursor=None, endCursor=None), data=[]
        )

    async def get_thread(self, thread_id: str) -> ThreadDict | None:
        if self.inner is not None:
            return await self.inner.get_thread(thread_id)
        return None

    # -- users: the persisted id is the login identifier ------------------------------

    async def get_user(self, identifier: str) -> PersistedUser | None:
        if self.inner is not None:
            return await self.inner.get_user(identifier)
        return PersistedUser(id=identifier, identifier=identifier, createdAt=_now())

    async def create_user(self, user: User) -> PersistedUser | None:
        if self.inner is not None:
            return await self.inner.create_user(user)
        return PersistedUser(
            id=user.identifier,
            identifier=user.identifier,
            display_name=user.display_name,
            metadata=user.metadata,
            createdAt=_now(),
        )

    # -- elements, favourites, the rest: forwarded or nothing ------------------------------

    @_queued
    async def create_element(self, element: Element) -> None:
        if self.inner is not None:
            await self.inner.create_element(element)

    async def get_element(self, thread_id: str, element_id: str) -> ElementDict | None:
        if self.inner is not None:
            return await self.inner.get_element(thread_id, element_id)
        return None

    @_queued
    async def delete_element(self, element_id: str, thread_id: str | None = None) -> None:
        if self.inner is not None:
            await self.inner.delete_element(element_id, thread_id)

    async def get_favorite_steps(self, user_id: str) -> list[StepDict]:
        if self.inner is not None:
            return await self.inner.get_favorite_steps(user_id)
        return []

    async def build_debug_url(self) -> str:
        if self.inner is not None:
            return await self.inner.build_debug_url()
        return ""

    async def close(self) -> None:
        if self.inner is not None:
            await self.inner.close()
