"""Where a Redis store keeps its memory index: one file per machine, shared by its processes.

Design
------
Plain Redis has no full-text search, so positive memory on Redis is the
SQLite FTS5 :class:`~.fts.MemoryIndex`, fed by the namespace's ``changes``
stream (:mod:`.redis_feed`). Its file lives on local disk and outlives the
process: every process of the machine that uses the same server, database
and namespace opens the same file, which records the feed position it
reflects. A fresh process therefore reads the stream from that position
(one ``XREAD``, one ``MGET`` of the entries changed since) instead of
scanning the namespace, as processes share the index beside a diskcache
directory.

The file is ``redis-<hash>.sqlite3``, the hash of (host, port, unix socket
path, database, namespace), in the directory given by ``index_dir`` (the
backend's option, or an ``index_dir`` query parameter of its URL), else
``$FEEDBACK_PLUGIN_CACHE_DIR``, else the per-user cache directory
(:func:`default_cache_dir`). Directories it creates and the file are private
to the user (0700 / 0600): the file holds the text of rated turns. Keep it on
a local file system: SQLite's shared-memory WAL does not work over NFS.

Never stale, never foreign: the position names the namespace's generation
token (``fp:{ns}:gen``, see :mod:`.redis_feed`), so a file built before a
``FLUSHDB``, a ``drop()`` or against another server that hashes alike is
rebuilt from a scan on its first catch-up, and so is one whose position was
trimmed from the stream. ``drop()`` also empties the file. Processes that
open it at once take turns: every catch-up or rebuild runs under the file's
write lock (``BEGIN IMMEDIATE``) and re-reads the position inside it, so one
process builds and the others then catch up from what it wrote.

A directory that cannot be written (or created) makes the process fall back
to a private temporary file, removed at exit, built from a scan as before,
with a logged warning: memory keeps working.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from .base import ChangeFeed
from .fts import MemoryIndex
from .fts_schema import rollback

__all__ = ["clear_index", "default_cache_dir", "index_file", "open_index", "split_index_dir"]

log = logging.getLogger("feedback_plugin")


def default_cache_dir() -> str:
    """``$FEEDBACK_PLUGIN_CACHE_DIR``, else a per-user cache directory.

    Linux: ``$XDG_CACHE_HOME/feedback_plugin`` (``~/.cache/...``); macOS:
    ``~/Library/Caches/feedback_plugin``; Windows:
    ``%LOCALAPPDATA%\\feedback_plugin\\Cache``.
    """
    env = os.environ.get("FEEDBACK_PLUGIN_CACHE_DIR")
    if env:
        return env
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return str(base / "feedback_plugin" / "Cache")
    if sys.platform == "darwin":
        return str(Path.home() / "Library" / "Caches" / "feedback_plugin")
    return str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "feedback_plugin")


def split_index_dir(url: str) -> tuple[str, str | None]:
    """``url`` without its ``index_dir`` query parameter (redis-py would refuse it), and
    the parameter's value (``None`` when absent).

    >>> split_index_dir("redis://h:6379/0?index_dir=/var/cache/fp&socket_timeout=3")
    ('redis://h:6379/0?socket_timeout=3', '/var/cache/fp')
    >>> split_index_dir("redis://h:6379/0")
    ('redis://h:6379/0', None)
    """
    base, _, query = url.partition("?")
    if "index_dir" not in query:
        return url, None
    query, hashmark, fragment = query.partition("#")
    pairs = parse_qsl(query, keep_blank_values=True)
    found = [value for name, value in pairs if name == "index_dir"]
    if not found:
        return url, None
    rest = urlencode([(name, value) for name, value in pairs if name != "index_dir"])
    return base + ("?" + rest if rest else "") + hashmark + fragment, found[-1] or None


def index_file(directory: str, connection: dict[str, Any], namespace: str | None) -> str:
    """The index file of one server, database and namespace in ``directory``
    (``connection``: redis-py's connection keywords; only where the server is counts).

    >>> index_file("/c", {"host": "h", "port": 6379, "db": 0, "password": "x"}, "app")[:9]
    '/c/redis-'
    """
    where = [connection.get(k) for k in ("host", "port", "path", "db")]
    digest = hashlib.sha256(json.dumps([*where, namespace]).encode()).hexdigest()[:32]
    return os.path.join(directory, f"redis-{digest}.sqlite3")


def _unusable(path: str) -> str | None:
    """Why ``path`` cannot hold the index (``None``: it can); makes the directory and the
    empty file, private to the user."""
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not os.access(directory, os.W_OK):  # SQLite makes -wal / -shm files beside it
            return f"{directory} is not writable"
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as exc:
        return str(exc)
    return None


def open_index(path: str, *, namespace: str | None, feed: ChangeFeed) -> MemoryIndex:
    """The memory index in the shared file ``path``; a private temporary file (with a
    warning) when ``path`` cannot be written."""
    why = _unusable(path)
    if why is not None:
        log.warning(
            "feedback_plugin: cannot keep the Redis memory index in %s (%s); this process "
            "keeps its own in a temporary file, built from a scan (set index_dir= or "
            "$FEEDBACK_PLUGIN_CACHE_DIR to a writable directory)",
            path,
            why,
        )
        return MemoryIndex.private(namespace=namespace, feed=feed)
    return MemoryIndex(path, namespace=namespace, feed=feed)


def clear_index(index: MemoryIndex) -> None:
    """Empty the file's rows and feed positions (the namespace was dropped): what it held
    is gone from it, its vectors' snapshots too, and its next catch-up rebuilds."""

    def clear(con: sqlite3.Connection) -> None:
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute("DELETE FROM turns")  # one namespace per file
            con.execute("DELETE FROM meta WHERE key = 'position' OR key LIKE 'position:%'")
            con.execute("COMMIT")
        except BaseException:
            rollback(con)
            raise
        con.execute("INSERT INTO turns_fts(turns_fts) VALUES ('optimize')")  # no old terms
        with contextlib.suppress(sqlite3.OperationalError):  # readers busy: next time
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    index.writing(clear)
    if index.path != ":memory:":
        shutil.rmtree(f"{index.path}.ann", ignore_errors=True)  # backends/vector_owners.py
