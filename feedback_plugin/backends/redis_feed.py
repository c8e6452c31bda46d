"""The Redis backend's change feed (positive memory), a mixin of :class:`~.redis.RedisBackend`.

Keys (see :mod:`.redis` for the encoding)::

    fp:{ns}:changes     STREAM of feedback changes: which entry (k, q), not its text
    fp:{ns}:gen         STRING: the namespace's generation token (random)

A rating adds one stream record in the ``MULTI`` that changes the entry
(:meth:`RedisFeed._change_record`); an import adds one per rated or
corrected turn it brought (:meth:`RedisFeed.add_changes`). The stream keeps
the last ``stream_maxlen`` records.

A feed position is ``"{gen}/{stream id}"``. The generation token is made
(``SET NX``, by the head script, :data:`~.redis_lua.HEAD`) the first time
anything reads the feed's head, so it is there as long as the namespace's
data is, and it goes with them: ``FLUSHDB``, ``FLUSHALL``, a replaced
server or :meth:`~.redis.RedisBackend.drop` (which deletes it last) remove
it, and the next head gets a new one. A reader whose position holds
another token, or a stream id older than the records kept (trimmed),
rebuilds from a scan (``changes_since`` returns ``None``). That is what
keeps a memory index file that outlives its process (:mod:`.redis_index`)
from serving data the server no longer holds.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from .base import SessionKey
from .redis_lua import HEAD, enc

__all__ = ["RedisFeed"]

_BATCH = 10_000  # stream records read or written per round trip


class RedisFeed:
    """The change feed half of :class:`~.redis.RedisBackend` (which supplies these)."""

    changes_key: str
    gen_key: str
    stream_maxlen: int
    _prefix: str
    _redis: Any

    @property
    def client(self) -> Any:
        raise NotImplementedError

    def _script(self, name: str, source: str) -> Any:
        raise NotImplementedError

    def _entry_prefix(self, key: SessionKey) -> str:
        raise NotImplementedError

    # -- the feed ------------------------------------------------------------

    def _change_record(self, key: SessionKey, qa_id: str) -> dict[str, Any]:
        """The ``XADD`` that commits with a feedback change (the memory's change feed)."""
        return {
            "name": self.changes_key,
            "fields": {"k": enc(list(key)), "q": enc(qa_id)},
            "maxlen": self.stream_maxlen,
            "approximate": True,
        }

    def feed_position(self) -> str:
        """The position of the newest change (``"{gen}/{stream id}"``), to read the changes
        after it later; makes the generation token if the namespace has none (one round
        trip: the head script)."""
        gen, last = self._script("head", HEAD)(
            keys=[self.gen_key, self.changes_key], args=[uuid.uuid4().hex]
        )
        return f"{gen}/{last}"

    def changes_since(self, position: str) -> tuple[str, list[str]] | None:
        """Current payloads of the entries changed after ``position``, and the new position.

        ``None`` when the reader must rebuild from a scan: ``position`` is of
        another generation (the data were flushed or dropped since), or
        changes after it were trimmed from the stream, or the feed restarted.
        Entries deleted or expired since their change are left out (the
        retriever re-reads every hit, so their stale index rows are dropped
        on sight).
        """
        gen, sep, start = position.rpartition("/")
        if not sep or not gen:
            return None  # no generation: a position of another version, or none
        client = self.client
        pipe = client.pipeline(transaction=False)
        pipe.get(self.gen_key)
        pipe.xread({self.changes_key: start}, count=_BATCH)
        current, reply = pipe.execute()
        if current != gen:
            return None
        last, names = start, dict[str, None]()
        while reply:
            messages = reply[0][1]
            for _, fields in messages:
                if "restart" in fields:  # restart_feed(): every reader rebuilds
                    return None
                names[self._changed_entry(fields)] = None
            last = messages[-1][0]
            if len(messages) < _BATCH:
                break
            reply = client.xread({self.changes_key: last}, count=_BATCH)
        if last != start and self._trimmed_after(start):
            return None
        out: list[str] = []
        keys = list(names)
        for i in range(0, len(keys), 1000):
            out.extend(p for p in client.mget(keys[i : i + 1000]) if p is not None)
        return f"{gen}/{last}", out

    def restart_feed(self) -> None:
        """Start the feed over: every reader rebuilds from a scan on its next read."""
        self.client.xadd(
            self.changes_key, {"restart": "1"}, maxlen=self.stream_maxlen, approximate=True
        )

    def add_changes(self, refs: Sequence[tuple[SessionKey, str]]) -> tuple[str | None, str] | None:
        """Stream records naming entries written by ``append`` (an import): every reader
        re-reads them (a :class:`~.feed.FeedWriter`). ``None``, writing nothing, when
        they are more than the stream keeps (``stream_maxlen``).

        Each ``MULTI`` of up to 10,000 records starts with the generation token and
        the stream's last id, so the span is contiguous (``before`` not ``None``)
        unless another writer's record came between two of them.
        """
        if len(refs) > self.stream_maxlen:
            return None
        head = self.feed_position()  # makes the generation token if there is none
        if not refs:
            return head, head
        before: str | None = None
        after = ""
        for start in range(0, len(refs), _BATCH):
            pipe = self.client.pipeline(transaction=True)
            pipe.get(self.gen_key)
            pipe.xrevrange(self.changes_key, count=1)
            for key, qa_id in refs[start : start + _BATCH]:
                pipe.xadd(**self._change_record(key, qa_id))
            replies = pipe.execute()
            gen = replies[0] or ""
            last = f"{gen}/{replies[1][0][0] if replies[1] else '0-0'}"
            before = last if start == 0 else (before if last == after else None)
            after = f"{gen}/{replies[-1]}"
        return before, after

    def _changed_entry(self, fields: dict[str, str]) -> str:
        if "q" in fields:
            return f"{self._prefix}e:{fields['k']}:{fields['q']}"
        # a change written before stream entries stopped carrying the payload ("p")
        entry = json.loads(fields["p"])
        return self._entry_prefix((entry.get("user_id"), entry["session_id"])) + enc(entry["qa_id"])

    def _trimmed_after(self, position: str) -> bool:
        """Whether the stream may have lost (trimmed) a change newer than stream id
        ``position``."""
        try:
            info = self.client.xinfo_stream(self.changes_key)
        except self._redis.ResponseError:  # the stream is gone (dropped): start over
            return True
        first = info.get("first-entry")
        if not first:
            return False
        if position != "0-0":  # everything older than the first kept change is gone
            return _older(position, str(first[0]))
        # "0-0": this reader has seen no change yet, so any trimmed change was one it
        # needed (trimming leaves no trace in max-deleted-entry-id; count instead)
        added = info.get("entries-added")  # Redis >= 7
        if added is not None:
            return int(added) > int(info["length"])
        return int(info["length"]) >= self.stream_maxlen  # Redis 6: maybe trimmed


def _older(a: str, b: str) -> bool:
    """Whether stream id ``a`` is older than ``b``."""
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return (int(ams), int(aseq or 0)) < (int(bms), int(bseq or 0))
