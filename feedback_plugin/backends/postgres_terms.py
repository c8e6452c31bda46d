"""Which words a PostgreSQL memory query searches for: the rarest, by the planner's own counts.

``ts_rank_cd`` has no inverse document frequency: a word in most remembered
turns ("password" in a help desk's memory) matches most rows, costs a rank
of each, and outweighs the rare word that tells them apart. So a query
searches its rarest lexemes only, as many as keep the estimated matches
within :data:`BUDGET` rows:

* lexemes: each query word as ``to_tsvector('english', …)`` stems it, asked
  of the server once per word and process (:data:`WORDS_KEPT` kept);
* counts: ``ANALYZE`` keeps, for a ``tsvector`` column, the fraction of rows
  holding each of its most common lexemes (``pg_stats.most_common_elems``).
  A lexeme not listed is rarer than the least common listed one, or in no
  row at all (a synonym the memory never uses): it is always searched, and
  the two rarest listed ones with it, however common, since the turn a
  query rewords holds its common words too (searching only the rarest,
  absent, words found 0.31 of reworded queries; this, 0.97). Read at most
  every :data:`STATS_EVERY` seconds per process; a table never analysed is
  analysed once, in the background.

Rows are matched by the chosen lexemes and ranked by all of the query's.
When even the rarest listed lexeme is estimated to match more than the
budget, the search ranks the owner's :data:`RECENT` most recent remembered
turns only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["BUDGET", "RECENT", "Choice", "Lexicon"]

log = logging.getLogger("feedback_plugin")

BUDGET = 1000
"""Rows a query's chosen lexemes are estimated to match at most."""
RECENT = 2000
"""Remembered turns an all-common query ranks (the owner's newest)."""
STATS_EVERY = 60.0
"""Seconds between reads of the column's statistics."""
WORDS_KEPT = 50_000
"""Words whose lexemes a process keeps."""

Run = Callable[[str, Any], list[tuple[Any, ...]]]

Choice = tuple[str, str, bool]
"""``(match, rank, recent only)``: the lexemes rows must hold one of, and every lexeme
of the query (what they are ranked by), each a tsquery text (OR-ed, quoted); whether
to rank only the owner's most recent remembered turns."""


def _ored(lexemes: Sequence[str]) -> str:
    return " | ".join("'" + x.replace("'", "''") + "'" for x in lexemes)


class Lexicon:
    """One schema's word counts, as the server's statistics give them."""

    def __init__(self, run: Run, schema: str) -> None:
        self._run = run
        self.schema = schema
        self._lock = threading.Lock()
        self._lexemes: dict[str, tuple[str, ...]] = {}
        self._freq: dict[str, float] = {}
        self._rows = 0.0  # remembered rows, estimated
        self._read_at = -STATS_EVERY
        self._analysing = False

    def choose(self, words: Sequence[str]) -> Choice | None:
        """The lexemes of ``words`` to search for (``None``: only stop words)."""
        lexemes = self._stems(words)
        if not lexemes:
            return None
        self._refresh()
        with self._lock:
            freq, rows = self._freq, self._rows
        # a lexeme the counts do not list is rarer than the least common listed one, or
        # in no row at all (a word of the query the memory never uses): searched always
        chosen = [x for x in lexemes if x not in freq]
        known = sorted((x for x in lexemes if x in freq), key=freq.__getitem__)
        matches = 0.0
        for taken, lexeme in enumerate(known):
            estimate = freq[lexeme] * rows
            if taken >= 2 and matches + estimate > BUDGET:
                break
            chosen.append(lexeme)
            matches += estimate
        common = bool(known) and freq[known[0]] * rows > BUDGET
        return _ored(chosen), _ored(lexemes), common

    def _stems(self, words: Sequence[str]) -> list[str]:
        with self._lock:
            missing = [w for w in words if w not in self._lexemes]
        if missing:
            rows = self._run(
                "SELECT w, tsvector_to_array(to_tsvector('english', w))"
                " FROM unnest(%s::text[]) AS w",
                (missing,),
            )
            with self._lock:
                if len(self._lexemes) + len(rows) > WORDS_KEPT:
                    self._lexemes.clear()
                for word, stems in rows:
                    self._lexemes[word] = tuple(stems)
        with self._lock:
            found = [x for w in words for x in self._lexemes.get(w, ())]
        return list(dict.fromkeys(found))

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._read_at < STATS_EVERY:
            return
        self._read_at = now
        rows = self._run(
            "SELECT s.most_common_elems::text::text[], s.most_common_elem_freqs, s.null_frac,"
            " c.reltuples FROM pg_stats s JOIN pg_namespace n ON n.nspname = s.schemaname"
            " JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename"
            " WHERE s.schemaname = %s AND s.tablename = 'turns' AND s.attname = 'words'",
            (self.schema,),
        )
        if not rows or rows[0][0] is None:
            self._analyse()
            return
        elems, freqs, null_frac, reltuples = rows[0]
        counted = dict(zip(elems, freqs, strict=False))  # freqs end with min, max (, null)
        with self._lock:
            self._freq = counted
            self._rows = max(float(reltuples), 0.0) * (1.0 - float(null_frac))

    def _analyse(self) -> None:
        """Have the server count the column's lexemes (once per process, off the query)."""
        if self._analysing:
            return
        self._analysing = True

        def analyse() -> None:
            try:
                self._run(f'ANALYZE "{self.schema}".turns (words)', None)
                self._read_at = -STATS_EVERY  # read them on the next query
            except Exception as exc:  # counts are an optimisation: a query works without
                log.warning("feedback_plugin: ANALYZE of the memory's words failed: %s", exc)

        threading.Thread(target=analyse, name="feedback-plugin-analyse", daemon=True).start()
