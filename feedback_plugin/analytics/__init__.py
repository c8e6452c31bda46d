"""Analytics: query, measure, export and import the turns of a :class:`SessionStore`.

Which prompt or model version do users like better, and which liked answers
make a dataset? Everything here streams over the store's scan, one entry
at a time, so a store of a million turns never sits in memory at once::

    from feedback_plugin import SessionStore, analytics

    store = SessionStore()
    analytics.stats(store, by="prompt_version")             # Metrics: a table in Jupyter
    analytics.entries(store, feedback="negative", user="alice").head(20)
    analytics.sessions(store, since=datetime(2024, 5, 1, tzinfo=timezone.utc))
    analytics.sessions(store, session_feedback="negative")  # conversations rated down
    analytics.memories_that_hurt(store, user="alice")        # worst first
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
* **session rating**: a whole conversation's own rating (Helicone's session
  feedback, ``store.session_thumbs``), kept on the session's first turn
  (``session_feedback``). The same words apply to its score: a session is
  *rated* when that rating has a score.
* **memory that hurts** (:func:`feedback_plugin.ratings.hurts`): a remembered
  turn that fed at least two answers rated negative, and more negative than
  positive ones; it is out of positive memory until rated again.

Filters (keyword arguments of :func:`entries`, :func:`sessions`,
:func:`stats`, :func:`export_jsonl` and :class:`Filter`): ``feedback``
(``"positive"``, ``"negative"``, ``"rated"``, ``"unrated"``), ``has_text``,
``min_score`` / ``max_score`` (inclusive; unrated turns never match),
``since`` (inclusive) / ``until`` (exclusive) on the turn's recording time,
``user``, ``session_id``, ``metadata`` (every key must be present with an
equal value; a string also matches a non-string value by its JSON text, so
``{"temperature": "0.2"}`` matches ``0.2``, as a command line gives it),
``hurting`` (``True``: only memories that hurt) and ``session_feedback``
(``"positive"``, ``"negative"``, ``"rated"``, ``"unrated"``: only the turns
of sessions whose own rating is of that kind; ``unrated`` is no rating, or
a comment without a score).

Where ``session_feedback`` applies: :func:`sessions` lists the sessions
whose rating is of that kind (and that have a turn passing the other
filters); :func:`entries`, :func:`stats` and the exports keep the turns of
those sessions, whichever turn of the session it is (the rating sits on the
first turn, but it speaks for all of them). A turn alone cannot answer it,
so those reads scan the store once more first, for the ratings; ``sessions``
needs no extra scan.

Session-level figures: :func:`stats` gives each group, besides the turn
positive rate, the share of its sessions rated as a whole that are rated
positive (``rated_sessions``, ``positive_sessions``,
``session_positive_rate`` and its Wilson interval ``session_ci_low`` ..
``session_ci_high``): Helicone's A/B comparison of model versions by
conversation ratings. A session belongs to every group it has a (matching)
turn in, as the other per-session figures count it; in an A/B test a
session stays on one variant, so it is in one group.

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
with its 95% Wilson interval, of turns or (``level="sessions"``) of
sessions rated as a whole (needs matplotlib). Both are in the
``analytics`` extra: ``pip install "feedback-plugin[analytics]"``, which also
brings tqdm for progress bars on long exports and imports.

Layout: one module per concept, every public name re-exported here (import
them from ``feedback_plugin.analytics``): ``filters`` (:class:`Filter`),
``reading`` (the streaming reads, through the store's public raw reads
only), ``tables`` (HTML and pandas tables), ``query`` (:func:`entries`),
``summaries`` (:func:`sessions`), ``metrics`` (:func:`stats`,
:func:`wilson_interval`), ``plot`` (:func:`plot_positive_rate`),
``memories`` (:func:`memories_that_hurt`; :func:`fed_counts` is in
``tables``) and ``jsonl`` (export and import).
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
from .memories import memories_that_hurt
from .metrics import GroupMetrics, Metrics, stats, wilson_interval
from .plot import plot_positive_rate
from .query import EntryQuery, entries
from .summaries import SessionSummary, SessionTable, sessions
from .tables import EntryTable, fed_counts

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
    "fed_counts",
    "import_jsonl",
    "memories_that_hurt",
    "plot_positive_rate",
    "raw_records",
    "sessions",
    "stats",
    "wilson_interval",
]
