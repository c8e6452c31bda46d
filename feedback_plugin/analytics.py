"""Analytics: query, measure, export and import the turns of a :class:`SessionStore`.

Which prompt or model version do users like better, and which liked answers
make a dataset? Everything here streams over the backend's scan, one entry
at a time, so a store of a million turns never sits in memory at once::

    from feedback_plugin import SessionStore, analytics

    store = SessionStore()
    analytics.stats(store, by="prompt_version")             # Metrics: a table in Jupyter
    analytics.entries(store, feedback="negative", user="alice").head(20)
    analytics.sessions(store, since=datetime(2024, 5, 1, tzinfo=timezone.utc))
    analytics.export_jsonl(store, "liked.jsonl", format="chat")
    analytics.import_jsonl(other_store, "backup.jsonl")     # after export_jsonl(format="raw")

Vocabulary
----------
The words are :mod:`feedback_plugin.ratings`' (defined there once):

* **positive**: ``feedback_score >= POSITIVE_MIN_SCORE`` (4); **negative**:
  ``feedback_score <= NEGATIVE_MAX_SCORE`` (2) (thumbs up stores 5, thumbs
  down 1; 3 is neither).
* **rated**: the turn has a score. A comment alone does not make a turn
  rated (filter it with ``has_text=True``), and neither does a correction
  alone.
* **user**: every query covers all users unless ``user=`` names one
  (``user=None`` selects the turns recorded without a user).

Filters (keyword arguments of :func:`entries`, :func:`sessions`,
:func:`stats`, :func:`export_jsonl` and :class:`Filter`): ``feedback``
(``"positive"``, ``"negative"``, ``"rated"``, ``"unrated"``), ``has_text``,
``min_score`` / ``max_score`` (inclusive; unrated turns never match),
``since`` (inclusive) / ``until`` (exclusive) on the turn's recording time,
``user``, ``session_id`` and ``metadata`` (every key must be present with an
equal value; a string also matches a non-string value by its JSON text, so
``{"temperature": "0.2"}`` matches ``0.2``, as a command line gives it).

Speed: queries and metrics work on the JSON payloads the backend returns
(``json.loads``), not on pydantic models; only turns a caller receives as
:class:`SessionQAEntry` are built as models, and :func:`stats` parses only
the small tail of each payload (feedback, user, metadata), however long the
answer and context. Over 100,000 turns on diskcache, ``stats`` takes about
a second on a 2-core machine, the backend's scan half of it
(``benchmarks/bench_analytics.py``).

Notebooks: :class:`EntryQuery`, :class:`EntryTable`, :class:`SessionTable`
and :class:`Metrics` render as HTML tables and convert with ``to_pandas()``
(needs pandas); :func:`plot_positive_rate` draws positive rate by group
with its 95% Wilson interval (needs matplotlib). Both are in the
``analytics`` extra: ``pip install "feedback-plugin[analytics]"``, which also
brings tqdm for progress bars on long exports and imports.
"""

from __future__ import annotations

import contextlib
import enum
import html
import importlib
import io
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING, Any, Final, Literal, TypeVar

from pydantic import ValidationError
from typing_extensions import TypedDict, Unpack

from .codec import Raw
from .codec import loads as _loads
from .codec import parse_light as _light
from .codec import parse_light_time as _light_time
from .errors import (
    ArgumentTypeError,
    ImportFormatError,
    InvalidArgumentError,
    StoreError,
)
from .models import SessionQAEntry, check_id, check_score, check_user
from .ratings import (
    MAX_SCORE,
    MIN_SCORE,
    NEGATIVE_MAX_SCORE,
    POSITIVE_MIN_SCORE,
    best_answer,
    is_rated,
    is_remembered,
)

if TYPE_CHECKING:
    from .store import SessionStore

log = logging.getLogger("feedback_plugin")

__all__ = [
    "ALL_USERS",
    "EXPORT_FORMATS",
    "FEEDBACK_KINDS",
    "NEGATIVE_MAX_SCORE",
    "POSITIVE_MIN_SCORE",
    "EntryQuery",
    "EntryTable",
    "Filter",
    "FilterArgs",
    "GroupMetrics",
    "ImportFormatError",
    "Metrics",
    "SessionSummary",
    "SessionTable",
    "chat_records",
    "entries",
    "eval_records",
    "export_jsonl",
    "import_jsonl",
    "plot_positive_rate",
    "raw_records",
    "sessions",
    "stats",
    "wilson_interval",
]

# POSITIVE_MIN_SCORE and NEGATIVE_MAX_SCORE: re-exported from feedback_plugin.ratings.
Z_95: Final = 1.959963984540054
"""The standard normal quantile of a two-sided 95% interval."""

FeedbackKind = Literal["positive", "negative", "rated", "unrated"]
FEEDBACK_KINDS: Final = ("positive", "negative", "rated", "unrated")
ExportFormat = Literal["raw", "chat", "eval"]
EXPORT_FORMATS: Final = ("raw", "chat", "eval")

_EXTRA_HINT = "pip install 'feedback-plugin[analytics]'"


class _All(enum.Enum):
    USERS = "all users"

    def __repr__(self) -> str:
        return "ALL_USERS"


ALL_USERS: Final = _All.USERS
"""The default ``user`` of every query: turns of every user (and of none)."""

UserFilter = str | None | Literal[_All.USERS]


# -- filters -------------------------------------------------------------------


class FilterArgs(TypedDict, total=False):
    """The filter keywords every query takes (see the module docstring)."""

    feedback: FeedbackKind | None
    has_text: bool | None
    min_score: int | None
    max_score: int | None
    since: datetime | None
    until: datetime | None
    user: UserFilter
    session_id: str | None
    metadata: Mapping[str, Any] | None


def _time_key(text: str) -> str:
    """A stored time as text that sorts like the time (``...SS.ffffffZ``)."""
    if text.endswith("Z"):
        if len(text) == 27:
            return text
        if len(text) == 20:  # pydantic leaves out a zero fraction
            return text[:19] + ".000000Z"
    return _key_of(_parse_time(text))


def _key_of(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return _utc(value)


def _utc(value: datetime) -> datetime:
    """Naive datetimes are read as UTC, like the store does."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _meta_equal(actual: Any, wanted: Any) -> bool:
    if actual == wanted and type(actual) is not bool and type(wanted) is not bool:
        return True
    if (type(actual) is bool or type(wanted) is bool) and (
        type(actual) is type(wanted) and actual == wanted
    ):
        return True
    return isinstance(wanted, str) and not isinstance(actual, str) and _json_text(actual) == wanted


@dataclass(frozen=True)
class Filter:
    """Which turns a query covers; every field left at its default selects everything.

    Validates on construction (a bad value raises ``ValueError``) and
    compiles to a predicate over raw entries (:meth:`predicate`).
    """

    feedback: FeedbackKind | None = None
    has_text: bool | None = None
    min_score: int | None = None
    max_score: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    user: UserFilter = ALL_USERS
    session_id: str | None = None
    metadata: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.feedback is not None and self.feedback not in FEEDBACK_KINDS:
            raise InvalidArgumentError(
                f"feedback must be one of {', '.join(FEEDBACK_KINDS)} or None, "
                f"got {self.feedback!r}"
            )
        if self.has_text is not None and not isinstance(self.has_text, bool):
            raise InvalidArgumentError(
                f"has_text must be True, False or None, got {self.has_text!r}"
            )
        check_score(self.min_score)
        check_score(self.max_score)
        low, high = self.min_score, self.max_score
        if low is not None and high is not None and low > high:
            raise InvalidArgumentError(f"min_score {low} is above max_score {high}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, datetime):
                    raise ArgumentTypeError(
                        f"{name} must be a datetime, got {type(value).__name__}"
                    )
                object.__setattr__(self, name, _utc(value))
        if self.user is not ALL_USERS:
            check_user(self.user)
        if self.session_id is not None:
            check_id(self.session_id)
        if self.metadata is not None:
            if not isinstance(self.metadata, Mapping) or not all(
                isinstance(k, str) for k in self.metadata
            ):
                raise ArgumentTypeError("metadata must be a mapping with string keys")
            object.__setattr__(self, "metadata", dict(self.metadata))

    @property
    def is_empty(self) -> bool:
        """True when the filter selects every turn."""
        return self.predicate() is None

    def predicate(self) -> Callable[[Raw], bool] | None:
        """A test over raw entries, or ``None`` when every entry passes."""
        tests: list[Callable[[Raw], bool]] = []
        feedback, low, high = self.feedback, self.min_score, self.max_score
        if feedback == "positive":
            low = POSITIVE_MIN_SCORE if low is None else max(low, POSITIVE_MIN_SCORE)
        elif feedback == "negative":
            high = NEGATIVE_MAX_SCORE if high is None else min(high, NEGATIVE_MAX_SCORE)
        elif feedback == "rated":
            tests.append(is_rated)
        elif feedback == "unrated":
            tests.append(lambda d: not is_rated(d))
        if low is not None or high is not None:
            lo = MIN_SCORE if low is None else low
            hi = MAX_SCORE if high is None else high

            def in_range(d: Raw) -> bool:
                score = d.get("feedback_score")
                return score is not None and lo <= score <= hi

            tests.append(in_range)
        if self.has_text is not None:
            want = self.has_text
            tests.append(lambda d: (d.get("feedback_text") is not None) is want)
        if self.user is not ALL_USERS:
            user = self.user
            tests.append(lambda d: d.get("user_id") == user)
        if self.session_id is not None:
            session_id = self.session_id
            tests.append(lambda d: d.get("session_id") == session_id)
        if self.since is not None or self.until is not None:
            since = None if self.since is None else _key_of(self.since)
            until = None if self.until is None else _key_of(self.until)

            def in_window(d: Raw) -> bool:
                key = _time_key(d["time"])
                return (since is None or key >= since) and (until is None or key < until)

            tests.append(in_window)
        if self.metadata:
            wanted = list(self.metadata.items())

            def meta_match(d: Raw) -> bool:
                meta = d.get("metadata") or {}
                return all(k in meta and _meta_equal(meta[k], v) for k, v in wanted)

            tests.append(meta_match)
        if not tests:
            return None
        if len(tests) == 1:
            return tests[0]
        return lambda d: all(test(d) for test in tests)

    def matches(self, entry: SessionQAEntry) -> bool:
        """Whether one entry passes (for entries already in hand)."""
        test = self.predicate()
        return test is None or test(entry.model_dump(mode="json"))


def _filter(filters: FilterArgs) -> Filter:
    return Filter(**filters)


def _checked(parse: Callable[[str], Raw], payload: str) -> Raw | None:
    """``parse(payload)``, or ``None`` (logged) for a damaged payload that is no turn:
    one such entry is skipped, as the store skips it, and never stops a report."""
    try:
        raw = parse(payload)
        if isinstance(raw, dict) and isinstance(raw.get("session_id"), str):
            score = raw.get("feedback_score")
            if score is None or type(score) is int:
                return raw
    except (ValueError, TypeError, KeyError):
        pass
    log.error("feedback_plugin: skipped a stored entry that is not a turn: %.200r", payload)
    return None


# -- streaming the store ------------------------------------------------------------


def _scan(store: SessionStore) -> Iterator[str]:
    """Every stored payload, after the write-behind queue is flushed; failures as StoreError."""
    store.flush()
    try:
        for _key, payload in store.backend.scan():
            yield payload
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"scan failed on {store.location}: {type(exc).__name__}: {exc}") from exc


def _scan_filtered(store: SessionStore, flt: Filter) -> Iterator[tuple[str, Raw]]:
    """``(payload, raw entry)`` of every turn that passes ``flt``, in the backend's order.

    One session of one user is read directly (in recording order) instead of scanned.
    """
    test = flt.predicate()
    if flt.session_id is not None and flt.user is not ALL_USERS:
        payloads: Iterable[str] = _read_session(store, (flt.user, flt.session_id))
    else:
        payloads = _scan(store)
    for payload in payloads:
        raw = _checked(_loads, payload)
        if raw is not None and (test is None or test(raw)):
            yield payload, raw


def _read_session(
    store: SessionStore, key: tuple[str | None, str], *, flush: bool = True
) -> list[str]:
    if flush:
        store.flush()
    try:
        return store.backend.read(key)
    except Exception as exc:
        raise StoreError(f"read failed on {store.location}: {type(exc).__name__}: {exc}") from exc


def _ordered(store: SessionStore, flt: Filter) -> Iterator[tuple[str, Raw]]:
    """Like :func:`_scan_filtered`, but session by session, each in recording order.

    Users in sorted order (``None`` first), each user's sessions oldest first
    (``list_sessions`` order): importing the result rebuilds the same
    sessions in the same order. Costs one scan of the session keys (memory
    in proportion to the number of sessions, not turns) and one read per session.
    """
    if flt.user is not ALL_USERS and flt.session_id is not None:
        yield from _scan_filtered(store, flt)
        return
    store.flush()
    backend = store.backend
    found: set[tuple[str | None, str]] = set()
    if flt.user is ALL_USERS:
        try:
            for key, _payload in backend.scan():
                if flt.session_id is None or key[1] == flt.session_id:
                    found.add(key)
        except Exception as exc:
            raise StoreError(
                f"scan failed on {store.location}: {type(exc).__name__}: {exc}"
            ) from exc
        users = sorted({user for user, _ in found}, key=lambda u: (u is not None, u or ""))
    else:
        users = [flt.user]
    test = flt.predicate()
    for user in users:
        try:
            names = backend.sessions(user)
        except Exception as exc:
            raise StoreError(
                f"listing sessions failed on {store.location}: {type(exc).__name__}: {exc}"
            ) from exc
        keys = [(user, name) for name in names]
        if flt.user is ALL_USERS:
            listed = set(keys)
            keys = [k for k in keys if k in found]
            keys += sorted(k for k in found if k[0] == user and k not in listed)
        for key in keys:
            for payload in _read_session(store, key, flush=False):
                raw = _checked(_loads, payload)
                if raw is not None and (test is None or test(raw)):
                    yield payload, raw


# -- result tables ----------------------------------------------------------------

_CELL = "text-align:left;vertical-align:top;white-space:pre-wrap"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _show(value: Any, width: int = 200) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, default=str)
    return _clip(str(value), width)


def _html_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> str:
    """An HTML table; every header and cell is escaped."""
    head = "".join(f'<th style="{_CELL}">{html.escape(c)}</th>' for c in columns)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{html.escape(_show(v))}</td>' for v in row) + "</tr>"
        for row in rows
    )
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (
        f'<table class="feedback-plugin">{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _pandas() -> Any:
    try:
        return importlib.import_module("pandas")  # no stubs needed: used as Any
    except ImportError as exc:
        raise ImportError(f"to_pandas() needs pandas: {_EXTRA_HINT}") from exc


_ENTRY_COLUMNS = (
    "time", "user_id", "session_id", "qa_id", "question", "answer",
    "feedback_score", "feedback_text", "correction", "metadata",
)  # fmt: skip


class EntryTable(Sequence[SessionQAEntry]):
    """A list of turns in hand: a table in Jupyter, a DataFrame with :meth:`to_pandas`."""

    def __init__(self, entries: Iterable[SessionQAEntry], *, more: bool = False) -> None:
        self._entries = list(entries)
        self.more = more
        """True when the query had more turns than this table holds."""

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: Any) -> Any:
        return self._entries[index]

    def __repr__(self) -> str:
        return f"EntryTable({len(self)} turns{', more not shown' if self.more else ''})"

    def to_list(self) -> list[SessionQAEntry]:
        return list(self._entries)

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``, one row per turn, one column per field."""
        return _entries_frame(self._entries)

    def _repr_html_(self) -> str:
        rows = ([getattr(e, c) for c in _ENTRY_COLUMNS] for e in self._entries)
        caption = f"{len(self)} turns" + (" (first ones; more not shown)" if self.more else "")
        return _html_table(_ENTRY_COLUMNS, rows, caption)


def _entries_frame(entries: Iterable[SessionQAEntry]) -> Any:
    pandas = _pandas()
    columns = list(SessionQAEntry.model_fields)
    return pandas.DataFrame([e.model_dump() for e in entries], columns=columns)


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


# -- sessions -------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionSummary:
    """One session of one user: its figures cover all its turns.

    ``matching`` counts the turns that passed the query's filters.
    """

    user_id: str | None
    session_id: str
    turns: int
    rated: int
    positive: int
    negative: int
    with_text: int
    mean_score: float | None
    first_time: datetime
    last_time: datetime
    first_question: str
    matching: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 text."""
        out = asdict(self)
        out["first_time"] = self.first_time.isoformat()
        out["last_time"] = self.last_time.isoformat()
        return out


_SESSION_COLUMNS = tuple(f.name for f in fields(SessionSummary))


class SessionTable(Sequence[SessionSummary]):
    """Sessions, least recently active first: a table in Jupyter, a DataFrame with ``to_pandas``."""

    def __init__(self, rows: Iterable[SessionSummary]) -> None:
        self._rows = list(rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: Any) -> Any:
        return self._rows[index]

    def __repr__(self) -> str:
        return f"SessionTable({len(self)} sessions)"

    def to_dicts(self) -> list[dict[str, Any]]:
        return [row.to_dict() for row in self._rows]

    def to_pandas(self) -> Any:
        pandas = _pandas()
        return pandas.DataFrame([asdict(r) for r in self._rows], columns=list(_SESSION_COLUMNS))

    def _repr_html_(self) -> str:
        rows = ([getattr(r, c) for c in _SESSION_COLUMNS] for r in self._rows)
        return _html_table(_SESSION_COLUMNS, rows, f"{len(self)} sessions")


class _SessionAcc:
    __slots__ = (
        "first", "first_question", "last", "matching", "negative", "positive", "rated",
        "score_sum", "turns", "with_text",
    )  # fmt: skip

    def __init__(self, time_key: str, question: str) -> None:
        self.turns = self.rated = self.positive = self.negative = self.with_text = 0
        self.matching = self.score_sum = 0
        self.first = self.last = time_key
        self.first_question = question


def sessions(
    store: SessionStore, *, limit: int | None = None, **filters: Unpack[FilterArgs]
) -> SessionTable:
    """Sessions with at least one turn that passes the filters, least recently active first.

    Each :class:`SessionSummary` covers all the session's turns (``matching``
    counts those that passed), so ``sessions(store, feedback="negative")`` lists
    every session a user disliked something in, with its whole record. One
    scan; memory grows with the number of sessions, not turns. ``limit``
    keeps the most recently active ones.
    """
    if limit is not None and (type(limit) is not int or limit < 0):
        raise InvalidArgumentError(f"limit must be an int >= 0 or None, got {limit!r}")
    flt = _filter(filters)
    test = flt.predicate()
    # A session listed by a filter on turns still gets its figures from all its
    # turns: scan everything of the user/session asked for, test each turn.
    scope = Filter(user=flt.user, session_id=flt.session_id)
    accs: dict[tuple[str | None, str], _SessionAcc] = {}
    for _payload, raw in _scan_filtered(store, scope):
        key = (raw.get("user_id"), raw["session_id"])
        time_key = _time_key(raw["time"])
        acc = accs.get(key)
        if acc is None:
            acc = accs[key] = _SessionAcc(time_key, raw["question"])
        elif time_key < acc.first:
            acc.first, acc.first_question = time_key, raw["question"]
        if time_key > acc.last:
            acc.last = time_key
        acc.turns += 1
        score = raw.get("feedback_score")
        if score is not None:
            acc.rated += 1
            acc.score_sum += score
            if score >= POSITIVE_MIN_SCORE:
                acc.positive += 1
            elif score <= NEGATIVE_MAX_SCORE:
                acc.negative += 1
        if raw.get("feedback_text") is not None:
            acc.with_text += 1
        if test is None or test(raw):
            acc.matching += 1
    rows = [
        SessionSummary(
            user_id=key[0],
            session_id=key[1],
            turns=acc.turns,
            rated=acc.rated,
            positive=acc.positive,
            negative=acc.negative,
            with_text=acc.with_text,
            mean_score=acc.score_sum / acc.rated if acc.rated else None,
            first_time=_parse_time(acc.first),
            last_time=_parse_time(acc.last),
            first_question=acc.first_question,
            matching=acc.matching,
        )
        for key, acc in accs.items()
        if acc.matching
    ]
    rows.sort(key=lambda r: (r.last_time, r.user_id or "", r.session_id))
    if limit is not None:
        rows = rows[len(rows) - limit :] if limit else []
    return SessionTable(rows)


# -- metrics --------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (95% by default).

    With no observations (``n == 0``) nothing is known: ``(0.0, 1.0)``.

    >>> [round(x, 4) for x in wilson_interval(3, 4)]
    [0.3006, 0.9544]
    """
    if n < 0 or not 0 <= successes <= n:
        raise InvalidArgumentError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class GroupMetrics:
    """The figures of one group (one value of the metadata key grouped by).

    ``rated`` counts turns with a score; ``mean_score``, ``positive_rate``
    and its 95% Wilson interval ``ci_low``..``ci_high`` are over those
    (``None`` / ``(0, 1)`` when there are none). Per session: ``sessions``
    counts the ``(user, session)`` pairs with a turn in the group,
    ``turns_per_session`` is ``turns / sessions`` and
    ``negative_session_share`` the share of those sessions with at least
    one negative turn in the group.
    """

    group: Any
    turns: int
    rated: int
    positive: int
    negative: int
    with_text: int
    mean_score: float | None
    positive_rate: float | None
    ci_low: float
    ci_high: float
    sessions: int
    turns_per_session: float
    negative_sessions: int
    negative_session_share: float | None

    @property
    def label(self) -> str:
        """The group's value as text; ``(none)`` for turns without the key."""
        if self.group is None:
            return "(none)"
        return self.group if isinstance(self.group, str) else _json_text(self.group)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_METRIC_COLUMNS = tuple(f.name for f in fields(GroupMetrics))


class Metrics(Sequence[GroupMetrics]):
    """Figures per group (:class:`GroupMetrics`), groups sorted by value, ``(none)`` last."""

    def __init__(self, by: str | None, groups: Iterable[GroupMetrics]) -> None:
        self.by = by
        self._groups = list(groups)

    def __len__(self) -> int:
        return len(self._groups)

    def __getitem__(self, index: Any) -> Any:
        return self._groups[index]

    def group(self, value: Any) -> GroupMetrics:
        """The figures of the group whose value is ``value`` (``KeyError`` if none)."""
        for g in self._groups:
            if g.group == value or g.label == value:
                return g
        raise KeyError(value)

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{g.label}: {g.turns} turns, {g.positive}/{g.rated} positive" for g in self._groups
        )
        return f"Metrics(by={self.by!r}, {inner})"

    def to_dicts(self) -> list[dict[str, Any]]:
        return [g.to_dict() for g in self._groups]

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``, one row per group, indexed by the group's label.

        The index is named after the key grouped by; ``(none)`` labels the
        turns without it (the ``group`` column keeps the raw value).
        """
        pandas = _pandas()
        frame = pandas.DataFrame([g.to_dict() for g in self._groups], columns=list(_METRIC_COLUMNS))
        frame.index = pandas.Index([g.label for g in self._groups], name=self.by or "group")
        return frame

    def _repr_html_(self) -> str:
        columns = (self.by or "group", *_METRIC_COLUMNS[1:])
        rows = ([g.label, *(getattr(g, c) for c in _METRIC_COLUMNS[1:])] for g in self._groups)
        return _html_table(columns, rows, f"feedback by {self.by}" if self.by else "feedback")


class _GroupAcc:
    __slots__ = ("negative", "positive", "rated", "score_sum", "sessions", "turns", "with_text")

    def __init__(self) -> None:
        self.turns = self.rated = self.positive = self.negative = self.with_text = 0
        self.score_sum = 0
        self.sessions: dict[tuple[str | None, str], bool] = {}


def _group_key(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return _json_text(value)
    return value


def _group_order(value: Any) -> tuple[int, str]:
    if value is None:
        return 1, ""
    return 0, value if isinstance(value, str) else _json_text(value)


def stats(store: SessionStore, by: str | None = None, **filters: Unpack[FilterArgs]) -> Metrics:
    """Feedback figures per value of the metadata key ``by`` (one group if ``None``).

    Turns without the key (or with ``null``) form the group ``None``, shown
    as ``(none)``. One scan over the raw payloads; memory grows with the
    number of sessions, not turns.
    """
    if by is not None and (not isinstance(by, str) or not by):
        raise InvalidArgumentError("by must be a non-empty metadata key or None")
    flt = _filter(filters)
    test = flt.predicate()
    groups: dict[Any, _GroupAcc] = {}
    if flt.session_id is not None and flt.user is not ALL_USERS:
        payloads: Iterable[str] = _read_session(store, (flt.user, flt.session_id))
    else:
        payloads = _scan(store)
    light = _light_time if flt.since is not None or flt.until is not None else _light
    for payload in payloads:
        raw = _checked(light, payload)
        if raw is None or (test is not None and not test(raw)):
            continue
        if by is None:
            value = None
        else:
            meta = raw.get("metadata")
            value = meta.get(by) if meta else None
            if value is not None and not isinstance(value, (str, int, float, bool)):
                value = _group_key(value)
        acc = groups.get(value)
        if acc is None:
            acc = groups[value] = _GroupAcc()
        acc.turns += 1
        negative = False
        score = raw.get("feedback_score")
        if score is not None:
            acc.rated += 1
            acc.score_sum += score
            if score >= POSITIVE_MIN_SCORE:
                acc.positive += 1
            elif score <= NEGATIVE_MAX_SCORE:
                acc.negative += 1
                negative = True
        if raw.get("feedback_text") is not None:
            acc.with_text += 1
        session = (raw.get("user_id"), raw["session_id"])
        if negative:
            acc.sessions[session] = True
        elif session not in acc.sessions:
            acc.sessions[session] = False
    out = []
    for value in sorted(groups, key=_group_order):
        acc = groups[value]
        low, high = wilson_interval(acc.positive, acc.rated)
        n_sessions = len(acc.sessions)
        negative_sessions = sum(acc.sessions.values())
        out.append(
            GroupMetrics(
                group=value,
                turns=acc.turns,
                rated=acc.rated,
                positive=acc.positive,
                negative=acc.negative,
                with_text=acc.with_text,
                mean_score=acc.score_sum / acc.rated if acc.rated else None,
                positive_rate=acc.positive / acc.rated if acc.rated else None,
                ci_low=low,
                ci_high=high,
                sessions=n_sessions,
                turns_per_session=acc.turns / n_sessions,
                negative_sessions=negative_sessions,
                negative_session_share=negative_sessions / n_sessions,
            )
        )
    return Metrics(by, out)


def plot_positive_rate(metrics: Metrics, ax: Any = None, *, title: str | None = None) -> Any:
    """Draw each group's positive rate as a bar with its 95% Wilson interval; return the axes.

    Groups without rated turns get no bar, only their label and ``n=0``.
    Needs matplotlib (``pip install "feedback-plugin[analytics]"``).
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"plot_positive_rate() needs matplotlib: {_EXTRA_HINT}") from exc
    if ax is None:
        _fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(metrics) + 3), 4.5))
    labels = [g.label for g in metrics]
    xs = list(range(len(labels)))
    shown = [(x, g, g.positive_rate) for x, g in enumerate(metrics) if g.positive_rate is not None]
    ax.bar(
        [x for x, _g, _rate in shown],
        [rate for _x, _g, rate in shown],
        yerr=[
            [rate - g.ci_low for _x, g, rate in shown],
            [g.ci_high - rate for _x, g, rate in shown],
        ],
        width=0.6,
        capsize=6,
        color="#4C72B0",
        edgecolor="black",
        linewidth=0.6,
    )
    for x, g in enumerate(metrics):
        text = f"{g.positive_rate:.0%}\nn={g.rated}" if g.rated else "n=0"
        y = g.ci_high + 0.02 if g.rated else 0.02
        ax.text(x, min(y, 1.0), text, ha="center", va="bottom", fontsize=9)
    ax.set_xticks(xs)
    ax.set_xticklabels(labels)
    ax.set_ylim(0, 1.15)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_yticklabels(["0%", "25%", "50%", "75%", "100%"])
    ax.set_ylabel(f"positive rate (score >= {POSITIVE_MIN_SCORE}), 95% CI")
    ax.set_xlabel(metrics.by or "group")
    ax.set_title(title or f"Positive rate by {metrics.by or 'group'}")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return ax


# -- export ------------------------------------------------------------------------------

_T = TypeVar("_T")


def _progress(items: Iterable[_T], enabled: bool | None, what: str) -> Iterable[_T]:
    """``items`` with a tqdm progress bar on stderr when tqdm is installed and wanted.

    ``enabled=None`` shows it when stderr is a terminal.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return items
    try:
        tqdm = importlib.import_module("tqdm.auto").tqdm
    except ImportError:
        return items
    bar: Iterable[_T] = tqdm(items, desc=what, unit=" turns", file=sys.stderr, leave=False)
    return bar


def raw_records(store: SessionStore, **filters: Unpack[FilterArgs]) -> Iterator[str]:
    """The stored JSON text of every matching turn, session by session in recording order.

    Exactly what :func:`import_jsonl` reads back.
    """
    for payload, _raw in _ordered(store, _filter(filters)):
        yield payload


def _chat(raw: Raw, system: str | None) -> dict[str, Any]:
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": raw["question"]})
    messages.append({"role": "assistant", "content": best_answer(raw)})
    return {"messages": messages}


def chat_records(
    store: SessionStore, *, system: str | None = None, **filters: Unpack[FilterArgs]
) -> Iterator[dict[str, Any]]:
    """Chat fine-tuning records of the turns users liked: ``{"messages": [user, assistant]}``.

    A turn is taken when it is positive or carries a correction (as positive
    memory does); the assistant message is the correction when there is one,
    else the original answer. ``system`` prepends a system message.
    Streamed in the backend's scan order.
    """
    for _payload, raw in _scan_filtered(store, _filter(filters)):
        if is_remembered(raw):
            yield _chat(raw, system)


def _eval(raw: Raw) -> dict[str, Any]:
    corrected = raw.get("correction") is not None
    return {
        "inputs": {"question": raw["question"]},
        "outputs": {"answer": best_answer(raw)},
        "metadata": {
            "qa_id": raw["qa_id"],
            "session_id": raw["session_id"],
            "user_id": raw.get("user_id"),
            "time": raw["time"],
            "reference": "correction" if corrected else "answer",
            "original_answer": raw["answer"],
            "feedback_score": raw.get("feedback_score"),
            "feedback_text": raw.get("feedback_text"),
            "context": raw.get("context") or [],
            "run_metadata": raw.get("metadata") or {},
        },
    }


def eval_records(store: SessionStore, **filters: Unpack[FilterArgs]) -> Iterator[dict[str, Any]]:
    """Evaluation examples with reference answers (LangSmith's inputs / outputs / metadata).

    The same turns as :func:`chat_records`; the reference answer is the
    correction when there is one, else the liked answer. ``metadata`` says
    which (``reference``) and keeps the original answer, rating, context and
    run metadata.
    """
    for _payload, raw in _scan_filtered(store, _filter(filters)):
        if is_remembered(raw):
            yield _eval(raw)


def _lines(store: SessionStore, fmt: str, flt: Filter, system: str | None) -> Iterator[str]:
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    if fmt == "raw":
        for payload, _raw in _ordered(store, flt):
            yield payload
        return
    for _payload, raw in _scan_filtered(store, flt):
        if is_remembered(raw):
            yield dumps(_chat(raw, system) if fmt == "chat" else _eval(raw))


def export_jsonl(
    store: SessionStore,
    out: str | os.PathLike[str] | IO[str],
    format: ExportFormat = "raw",
    *,
    system: str | None = None,
    progress: bool | None = None,
    **filters: Unpack[FilterArgs],
) -> int:
    """Write matching turns as JSON Lines to a path or text file; return the lines written.

    ``format``: ``"raw"`` (the stored entries, for :func:`import_jsonl`),
    ``"chat"`` (:func:`chat_records`) or ``"eval"`` (:func:`eval_records`).
    A raw export comes out session by session, each in recording order
    (so an import rebuilds the same sessions); the others in the backend's
    scan order, which is cheaper. ``progress``
    shows a tqdm bar on stderr (``None``: when stderr is a terminal).
    """
    if format not in EXPORT_FORMATS:
        raise InvalidArgumentError(
            f"format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}"
        )
    lines = _lines(store, format, _filter(filters), system)
    written = 0
    if isinstance(out, (str, os.PathLike)):
        with open(out, "w", encoding="utf-8", newline="\n") as fp:
            for line in _progress(lines, progress, f"export {format}"):
                fp.write(line + "\n")
                written += 1
    else:
        for line in _progress(lines, progress, f"export {format}"):
            out.write(line + "\n")
            written += 1
    return written


# -- import --------------------------------------------------------------------------------


def _parse_line(line: str, where: str) -> SessionQAEntry:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{where}: not JSON ({exc.msg})") from None
    except RecursionError:
        raise ImportFormatError(f"{where}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise ImportFormatError(f"{where}: not a raw entry (a JSON {type(data).__name__})")
    missing = [k for k in ("qa_id", "session_id", "question", "answer") if k not in data]
    if missing:
        hint = (
            " (a chat or eval export cannot be imported)"
            if "messages" in data or ("inputs" in data)
            else ""
        )
        raise ImportFormatError(f"{where}: not a raw entry, missing {', '.join(missing)}{hint}")
    try:
        # Before validation: the model would coerce "5", 5.0 and true into scores.
        check_score(data.get("feedback_score"))
        entry = SessionQAEntry.model_validate(data)
        check_id(entry.session_id)
        check_id(entry.qa_id, "qa_id")
        check_user(entry.user_id)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(p) for p in error["loc"])
        raise ImportFormatError(f"{where}: {loc}: {error['msg']}") from None
    except (ValueError, OverflowError) as exc:  # OverflowError: a time moved past year 1..9999
        raise ImportFormatError(f"{where}: {exc}") from None
    except RecursionError:
        raise ImportFormatError(f"{where}: JSON nested too deeply") from None
    return entry


def _decoded(lines: Iterable[str | bytes], name: str) -> Iterator[tuple[int, str]]:
    """Number and text of each line; bytes must be UTF-8 (a BOM on the first line is dropped)."""
    for number, line in enumerate(lines, 1):
        if isinstance(line, str):
            yield number, line
            continue
        try:
            yield number, line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise ImportFormatError(
                f"{name}, line {number}: not UTF-8 text (byte 0x{line[exc.start]:02x} at "
                f"column {exc.start + 1}); convert the file, e.g. iconv -f latin1 -t utf-8"
            ) from None


def _parse(fp: IO[str] | IO[bytes], name: str) -> Iterator[SessionQAEntry]:
    for number, line in _decoded(fp, name):
        if line.strip():
            yield _parse_line(line, f"{name}, line {number}")


def import_jsonl(
    store: SessionStore,
    source: str | os.PathLike[str] | IO[str] | IO[bytes],
    *,
    batch_size: int = 1000,
    progress: bool | None = None,
) -> int:
    """Import a raw export (:func:`export_jsonl`, ``format="raw"``); return the turns imported.

    Every field comes back exactly (``qa_id``, times, feedback, correction,
    metadata, user). A file (or any seekable source) is checked whole before
    anything is written, so a bad line (:class:`ImportFormatError`, naming the
    line) changes nothing; from a pipe, batches before the bad line stay.
    A line must be UTF-8 text (a binary source is decoded line by line, so
    the error names the line) and its ``feedback_score`` an int from 1 to 5
    or null, as everywhere else (``"5"``, ``5.0`` and ``true`` are refused).

    Turns whose ``qa_id`` already exists in their session are replaced in
    place, so importing the same file twice changes nothing. The same goes
    within one file: a ``qa_id`` repeated in one session (of one user) is one
    turn, with the later line's fields at the earlier line's place. The count
    returned is of distinct turns, which is what the store holds afterwards.
    """
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        with open(source, "rb") as fp:
            return _import(store, fp, name, batch_size, progress)
    return _import(store, source, getattr(source, "name", "<input>"), batch_size, progress)


def _import(
    store: SessionStore,
    fp: IO[str] | IO[bytes],
    name: str,
    batch_size: int,
    progress: bool | None,
) -> int:
    seekable = False
    with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
        seekable = fp.seekable()
    if seekable:
        start = fp.tell()
        for _entry in _parse(fp, name):
            pass
        fp.seek(start)
    turns: set[tuple[str | None, str, str]] = set()

    def counted(entries: Iterable[SessionQAEntry]) -> Iterator[SessionQAEntry]:
        for entry in entries:
            turns.add((entry.user_id, entry.session_id, entry.qa_id))
            yield entry

    entries_in = _progress(_parse(fp, name), progress, "import")
    store.import_entries(counted(entries_in), batch_size=batch_size)
    return len(turns)
