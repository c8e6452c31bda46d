"""Analytics: query, measure, export and import the turns of a :class:`SessionStore`.

Which prompt or model version do users like better, and which liked answers
make a dataset? Everything here streams over the store's scan, one entry
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

Layout: one module per concept, every public name re-exported here (import
them from ``feedback_plugin.analytics``): ``filters`` (:class:`Filter`),
``reading`` (the streaming reads, through the store's public raw reads
only), ``tables`` (HTML and pandas tables), ``query`` (:func:`entries`),
``summaries`` (:func:`sessions`), ``metrics`` (:func:`stats`,
:func:`wilson_interval`), ``plot`` (:func:`plot_positive_rate`) and
``jsonl`` (export and import).
"""

from __future__ import annotations

# POSITIVE_MIN_SCORE and NEGATIVE_MAX_SCORE: re-exported from feedback_plugin.ratings,
# ImportFormatError from feedback_plugin.errors.
from ..errors import ImportFormatError
from ..ratings import NEGATIVE_MAX_SCORE, POSITIVE_MIN_SCORE
from .filters import ALL_USERS, FEEDBACK_KINDS, Filter, FilterArgs
from .jsonl import (
    EXPORT_FORMATS,
    chat_records,
    eval_records,
    export_jsonl,
    import_jsonl,
    raw_records,
)
from .metrics import GroupMetrics, Metrics, stats, wilson_interval
from .plot import plot_positive_rate
from .query import EntryQuery, entries
from .summaries import SessionSummary, SessionTable, sessions
from .tables import EntryTable

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
