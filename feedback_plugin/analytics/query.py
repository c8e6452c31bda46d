"""Turns as a query: :func:`entries` and the lazy :class:`EntryQuery` it returns.

An :class:`EntryQuery` holds a store and a :class:`~.filters.Filter`, not
turns: every iteration streams the store again, so it is cheap to keep and
always current.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from typing_extensions import Unpack

from ..codec import Raw
from ..models import SessionQAEntry
from .filters import Filter, FilterArgs, _filter
from .reading import _scan, _scan_filtered
from .tables import EntryTable, _entries_frame

if TYPE_CHECKING:
    from ..store import SessionStore

__all__ = ["EntryQuery", "entries"]

log = logging.getLogger("feedback_plugin")


class EntryQuery:
    """The turns that pass a filter: lazy, re-iterable, streamed on every iteration.

    ``for entry in query`` streams :class:`SessionQAEntry` models; :meth:`raw`
    streams the stored JSON objects (cheaper); :meth:`count` counts without
    building models. In Jupyter it shows its first 20 turns.
    """

    repr_rows = 20

    def __init__(self, store: SessionStore, where: Filter) -> None:
        self.store = store
        self.where = where

    def __repr__(self) -> str:
        return f"EntryQuery({self.store!r}, {self.where!r})"

    def raw(self) -> Iterator[Raw]:
        """The stored JSON object of every matching turn."""
        for _payload, raw in _scan_filtered(self.store, self.where):
            yield raw

    def __iter__(self) -> Iterator[SessionQAEntry]:
        if self.where.is_empty:
            rows: Iterable[tuple[str, Any]] = ((p, p) for p in _scan(self.store))
            parse: Callable[[Any], SessionQAEntry] = SessionQAEntry.from_json
        else:
            rows, parse = _scan_filtered(self.store, self.where), SessionQAEntry.model_validate
        for payload, value in rows:
            try:
                yield parse(value)
            except ValueError:  # a damaged entry: skipped, as the store skips it
                log.error(
                    "feedback_plugin: skipped a stored entry that is not a turn: %.200r", payload
                )

    def count(self) -> int:
        """How many turns match (one scan, no models)."""
        if self.where.is_empty:
            return sum(1 for _ in _scan(self.store))
        return sum(1 for _ in _scan_filtered(self.store, self.where))

    def head(self, n: int = 20) -> EntryTable:
        """The first ``n`` matching turns the scan meets (not a sample, not sorted)."""
        taken: list[SessionQAEntry] = []
        iterator = iter(self)
        for entry in iterator:
            if len(taken) == n:
                _close(iterator)
                return EntryTable(taken, more=True)
            taken.append(entry)
        return EntryTable(taken)

    def to_list(self) -> list[SessionQAEntry]:
        """Every matching turn, in memory."""
        return list(self)

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` of every matching turn (they all go into memory)."""
        return _entries_frame(self)

    def _repr_html_(self) -> str:
        return self.head(self.repr_rows)._repr_html_()


def _close(iterator: Iterator[Any]) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def entries(store: SessionStore, **filters: Unpack[FilterArgs]) -> EntryQuery:
    """The turns that pass the filters, as a lazy :class:`EntryQuery`.

    >>> import tempfile
    >>> from feedback_plugin import SessionStore
    >>> store = SessionStore(tempfile.mkdtemp())
    >>> turn = store.record("s1", "Hi?", "Hello.", metadata={"prompt_version": "v2"})
    >>> _ = store.thumbs("s1", turn.qa_id, up=True)
    >>> [e.answer for e in entries(store, feedback="positive", metadata={"prompt_version": "v2"})]
    ['Hello.']
    >>> store.close()
    """
    return EntryQuery(store, _filter(filters))
