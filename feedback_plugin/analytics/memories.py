"""Memories that hurt: :func:`memories_that_hurt` lists them, worst first.

A remembered turn (liked, or corrected) that was handed to the model keeps,
in ``fed_outcomes``, how each answer it fed was rated. One that fed at
least two answers rated negative, and more negative ones than positive
(:func:`feedback_plugin.ratings.hurts`), leaves positive memory until it is
rated again. These are the turns to look at: a liked answer that misleads
in other contexts, or one whose correction is out of date.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing_extensions import Unpack

from ..errors import InvalidArgumentError
from .filters import Filter, FilterArgs
from .query import EntryQuery
from .tables import EntryTable, fed_counts

if TYPE_CHECKING:
    from ..store import SessionStore

__all__ = ["memories_that_hurt"]


def memories_that_hurt(store: SessionStore, **filters: Unpack[FilterArgs]) -> EntryTable:
    """The memories that hurt, worst first, as an :class:`EntryTable` of whole turns.

    Worst first: most negative answers fed, then fewest positive ones, then
    the oldest. Each turn's ``fed_outcomes`` maps the answers it fed to
    ``"negative"`` / ``"positive"``; :func:`fed_counts` counts them, and the
    table shows them as ``fed_negative`` / ``fed_positive`` (in Jupyter and
    in ``to_pandas()``). Takes the filters of :func:`entries` (every user by
    default; ``user="ann"`` for one). One scan; only the memories that hurt
    are kept in memory.

    >>> import tempfile
    >>> from feedback_plugin import SessionStore
    >>> store = SessionStore(tempfile.mkdtemp())
    >>> liked = store.record("old", "Reset?", "Settings.", user="ann")
    >>> _ = store.thumbs("old", liked.qa_id, up=True, user="ann")
    >>> for n in range(2):  # two answers fed with it, both rated down
    ...     answer = store.record(f"s{n}", "Q?", "A.", user="ann", memory_ids=[liked.qa_id])
    ...     _ = store.thumbs(f"s{n}", answer.qa_id, up=False, user="ann")
    >>> [(e.qa_id == liked.qa_id, fed_counts(e)) for e in memories_that_hurt(store, user="ann")]
    [(True, (2, 0))]
    >>> store.close()
    """
    if filters.get("hurting", True) is not True:
        raise InvalidArgumentError("memories_that_hurt takes no hurting= (it is True)")
    args: FilterArgs = {**filters, "hurting": True}
    where = Filter(**args)
    found = list(EntryQuery(store, where))
    found.sort(
        key=lambda e: (
            -fed_counts(e)[0],
            fed_counts(e)[1],
            e.time,
            e.user_id or "",
            e.session_id,
            e.qa_id,
        )
    )
    return EntryTable(found)
