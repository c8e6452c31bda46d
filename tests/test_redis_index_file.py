"""The Redis memory index lives in a file per machine (backends/redis_index.py).

A second store object, another process, several processes at once: they open
the file the first one built and catch up from the ``changes`` stream, with
no scan of the namespace. Whatever the file holds from before a ``FLUSHDB``,
a ``drop()`` or a trimmed stream is never served: the index rebuilds. An
unwritable directory falls back to a private file. Every test keeps its files
in its own temporary directory (tests/conftest.py sets
``$FEEDBACK_PLUGIN_CACHE_DIR``; some pass ``index_dir`` themselves).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _redis import REDIS_URL, Counter, require_redis
from langchain_core.embeddings import Embeddings

from feedback_plugin import PositiveMemoryRetriever, SessionQAEntry, SessionStore
from feedback_plugin.backends.redis import RedisBackend
from feedback_plugin.backends.redis_index import default_cache_dir, split_index_dir
from feedback_plugin.memory import search_memory

REPO = Path(__file__).resolve().parents[1]
SCANS = {"SISMEMBER", "SSCAN", "SCAN"}  # how a scan of the namespace starts


class Scans(Counter):
    """Counts the commands a redis-py client sends; whether one began a scan."""

    @property
    def scanned(self) -> bool:
        return bool(SCANS & set(self.commands))


def url_with(index_dir: Path, url: str = REDIS_URL) -> str:
    return f"{url}{'&' if '?' in url else '?'}index_dir={index_dir}"


@pytest.fixture
def namespace() -> Iterator[str]:
    require_redis()
    ns = f"test-{uuid.uuid4().hex}"
    yield ns
    backend = RedisBackend(REDIS_URL, namespace=ns)
    backend.drop()
    backend.close()


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    return tmp_path / "index"


def liked(store: SessionStore, session: str, question: str, answer: str) -> str:
    turn = store.record(session, question, answer, wait=True)
    assert store.thumbs(session, turn.qa_id, up=True)
    return turn.qa_id


def found(store: SessionStore, query: str) -> set[str]:
    return {d.metadata["qa_id"] for d in PositiveMemoryRetriever(store=store, k=5).invoke(query)}


def counted(store: SessionStore) -> Scans:
    return Scans(store.backend.client)  # type: ignore[attr-defined]


def index_rows(path: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT question, answer FROM turns").fetchall()
    finally:
        con.close()


# -- where the file lives ---------------------------------------------------------------


def test_the_file_is_per_server_database_and_namespace(tmp_path: Path) -> None:
    def path(url: str, ns: str | None) -> str:
        return RedisBackend(url, namespace=ns, index_dir=tmp_path).index_path

    base = path("redis://127.0.0.1:6379/15", "a")
    assert os.path.dirname(base) == str(tmp_path)
    assert base == path("redis://127.0.0.1:6379/15?socket_timeout=3", "a")  # options aside
    assert base != path("redis://127.0.0.1:6379/15", "b")
    assert base != path("redis://127.0.0.1:6379/14", "a")
    assert base != path("redis://127.0.0.1:6380/15", "a")
    assert base != path("redis://127.0.0.1:6379/15", None)


def test_the_directory_comes_from_the_option_the_url_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_PLUGIN_CACHE_DIR", str(tmp_path / "env"))
    assert RedisBackend(REDIS_URL).index_path.startswith(str(tmp_path / "env") + os.sep)
    from_url = RedisBackend(url_with(tmp_path / "url"))
    assert from_url.index_path.startswith(str(tmp_path / "url") + os.sep)
    assert from_url.url == REDIS_URL  # redis-py never sees index_dir
    option = RedisBackend(url_with(tmp_path / "url"), index_dir=tmp_path / "opt")
    assert option.index_path.startswith(str(tmp_path / "opt") + os.sep)  # the option wins
    monkeypatch.delenv("FEEDBACK_PLUGIN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert default_cache_dir() == str(tmp_path / "xdg" / "feedback_plugin")
    assert split_index_dir("unix:///tmp/r.sock?db=2&index_dir=/x") == (
        "unix:///tmp/r.sock?db=2",
        "/x",
    )


def test_a_store_url_with_index_dir_works_and_keeps_the_file_there(
    namespace: str, index_dir: Path
) -> None:
    with SessionStore(url_with(index_dir), namespace=namespace) as store:
        qa = liked(store, "s1", "How do I reset my password?", "Settings > Security.")
        assert found(store, "reset password") == {qa}
        path = store.memory.path  # type: ignore[attr-defined]
    assert os.path.dirname(path) == str(index_dir)
    assert index_rows(path) == [("How do I reset my password?", "Settings > Security.")]
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)  # the text of rated turns


# -- a second store object, another process: no scan ----------------------------------------


def test_a_second_store_object_opens_the_file_and_does_not_scan(
    namespace: str, index_dir: Path
) -> None:
    url = url_with(index_dir)
    with SessionStore(url, namespace=namespace) as a:
        qa = liked(a, "s1", "How do I reset my password?", "Settings > Security.")
        assert found(a, "reset password") == {qa}  # builds the file (a scan)
        other = liked(a, "s2", "Where are my invoices?", "Billing > History.")  # not applied
        with SessionStore(url, namespace=namespace) as b:
            counter = counted(b)
            assert found(b, "invoices") == {other}  # from the stream
            assert found(b, "reset password") == {qa}
            assert not counter.scanned, counter.commands
            assert b.memory.path == a.memory.path  # type: ignore[attr-defined]
            assert b.memory.position() == a.backend.feed_position()  # type: ignore[attr-defined]


CHILD = """
import json, sys
from feedback_plugin import PositiveMemoryRetriever, SessionStore

url, namespace, query = sys.argv[1], sys.argv[2], sys.argv[3]
store = SessionStore(url, namespace=namespace)
sent = []
send = store.backend.client.execute_command
def counting(*args, **kwargs):
    sent.append(str(args[0]).upper())
    return send(*args, **kwargs)
store.backend.client.execute_command = counting
if len(sys.argv) > 4:
    sys.stdin.readline()  # wait for the go
docs = PositiveMemoryRetriever(store=store, k=5).invoke(query)
print(json.dumps({"found": sorted(d.metadata["qa_id"] for d in docs), "commands": sent,
                  "path": store.memory.path}))
store.close()
"""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_child(url: str, namespace: str, query: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), url, namespace, query],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
        cwd=str(REPO),
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_a_new_process_opens_the_file_and_catches_up_from_the_stream(
    namespace: str, index_dir: Path
) -> None:
    url = url_with(index_dir)
    with SessionStore(url, namespace=namespace) as a:
        keep = liked(a, "s1", "How do I reset my password?", "Settings > Security.")
        lowered = liked(a, "s1", "How do I reset my passcode?", "Security > Passcode.")
        assert found(a, "reset") == {keep, lowered}  # builds the file
        path = a.memory.path  # type: ignore[attr-defined]
        # after the file was written, in this process, with no query here since:
        assert a.thumbs("s1", lowered, up=False)
        new = liked(a, "s2", "How do I reset my PIN?", "Security > PIN.")
    child = run_child(url, namespace, "reset")
    assert child["path"] == path
    assert sorted(child["found"]) == sorted([keep, new])  # lowered: gone; new: in
    assert not SCANS & set(child["commands"]), child["commands"]  # caught up, no scan


@pytest.mark.slow
def test_processes_opening_a_new_file_at_once_build_it_once(
    namespace: str, index_dir: Path
) -> None:
    url = url_with(index_dir)
    with SessionStore(url, namespace=namespace) as store:
        items = []
        for i in range(3000):
            entry = SessionQAEntry(
                qa_id=f"q{i}",
                session_id=f"s{i // 30}",
                question=f"How do I reset gadget {i}?",
                answer=f"Gadget {i}: hold the button.",
                feedback_score=5 if i % 2 else None,
            )
            items.append(((None, entry.session_id), entry.qa_id, entry.to_json()))
        store.backend.append(items)
        qa = liked(store, "s-x", "Where is the quokka switch?", "Under the desk.")
        path = store.backend.index_path  # type: ignore[attr-defined]
    assert not os.path.exists(path)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CHILD), url, namespace, "quokka", "wait"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
            cwd=str(REPO),
        )
        for _ in range(3)
    ]
    try:
        for child in children:  # all at once
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = []
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert all(r["found"] == [qa] for r in results), results
    assert [bool(SCANS & set(r["commands"])) for r in results].count(True) == 1
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT count(*) FROM turns").fetchone()[0] == 1501
    finally:
        con.close()


# -- never stale, never foreign -------------------------------------------------------------


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Any]:
    """A redis-server of this test's own (FLUSHDB must not touch the shared test db)."""
    import shutil

    require_redis()
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    from faults.conftest import PrivateRedis

    directory = tmp_path / "redis-data"
    directory.mkdir()
    server = PrivateRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout=5)
        server.kill()


@pytest.mark.slow
def test_flushdb_rebuilds_and_nothing_stale_is_served(private_redis: Any, index_dir: Path) -> None:
    url = url_with(index_dir, private_redis.url)
    with SessionStore(url, namespace="app") as a:
        old = liked(a, "s1", "How do I reset my password?", "Settings > Security.")
        assert found(a, "reset password") == {old}
        a.backend.client.flushdb()  # type: ignore[attr-defined]
        counter = counted(a)
        a.ready_memory()  # nothing changed since the flush: no stream record to read
        assert counter.scanned  # the running process rebuilt
        assert a.memory.search("password", user=None, limit=5, min_score=4) == []
        new = liked(a, "s2", "How do I reset my router?", "Unplug it.")
        assert found(a, "reset") == {new}
    with SessionStore(url, namespace="app") as b:  # a later process: the file is right
        b.backend.client.flushdb()  # type: ignore[attr-defined]
        again = liked(b, "s3", "How do I reset my modem?", "Hold reset.")
        counter = counted(b)
        assert found(b, "reset") == {again}
        assert counter.scanned
        assert b.memory.search("router", user=None, limit=5, min_score=4) == []


def test_a_trimmed_stream_rebuilds(namespace: str, index_dir: Path) -> None:
    url = url_with(index_dir)
    with SessionStore(url, namespace=namespace) as a:
        qa = liked(a, "s1", "How do I reset my password?", "Settings > Security.")
        assert found(a, "reset password") == {qa}
        position = a.memory.position()  # type: ignore[attr-defined]
    with SessionStore(url, namespace=namespace) as writer:
        later = [liked(writer, "s2", f"How do I reset gadget {i}?", "Hold it.") for i in range(3)]
        assert writer.thumbs("s1", qa, up=False)
        backend: Any = writer.backend
        backend.client.xtrim(backend.changes_key, maxlen=1, approximate=False)
    with SessionStore(url, namespace=namespace) as b:
        counter = counted(b)
        assert found(b, "reset") == set(later)  # the lowered rating is not served
        assert counter.scanned  # the position was trimmed away: rebuilt
        assert b.memory.position() != position  # type: ignore[attr-defined]


def test_drop_empties_the_file(namespace: str, index_dir: Path) -> None:
    url = url_with(index_dir)
    with SessionStore(url, namespace=namespace) as a, SessionStore(url, namespace=namespace) as b:
        qa = liked(a, "s1", "How do I reset my password?", "Settings > Security.")
        assert found(a, "password") == found(b, "password") == {qa}
        path = a.memory.path  # type: ignore[attr-defined]
        os.makedirs(path + ".ann")  # vector snapshots (backends/vector_owners.py)
        with open(path + ".ann/owner.faiss", "wb") as f:
            f.write(b"vectors")
        a.backend.drop()  # type: ignore[attr-defined]
        assert index_rows(path) == []
        assert not os.path.exists(path + ".ann")
        for suffix in ("", "-wal"):  # the text is not at rest in the file any more
            if os.path.exists(path + suffix):
                with open(path + suffix, "rb") as f:
                    assert b"Settings > Security" not in f.read()
        assert b.memory.search("password", user=None, limit=5, min_score=4) == []
        new = liked(a, "s1", "How do I reset my router?", "Unplug it.")
        assert found(b, "reset") == {new}
    with SessionStore(url, namespace=namespace) as c:
        c.backend.drop()  # type: ignore[attr-defined]  (a process that never queried)
        assert index_rows(path) == []


def test_an_unwritable_directory_falls_back_to_a_private_file(
    namespace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    caplog.set_level(logging.WARNING, logger="feedback_plugin")
    with SessionStore(url_with(blocker / "index"), namespace=namespace) as store:
        qa = liked(store, "s1", "How do I reset my password?", "Settings > Security.")
        assert found(store, "reset password") == {qa}
        assert "cannot keep the Redis memory index" in caplog.text
        path = store.memory.path  # type: ignore[attr-defined]
        assert not path.startswith(str(blocker)) and os.path.exists(path)
    assert not (tmp_path / "a-file").is_dir()


# -- vectors come with the file ---------------------------------------------------------------


class CountingEmbeddings(Embeddings):
    """'Meaning': password and credentials are one concept (counts documents embedded)."""

    model = "counting-v1"

    def __init__(self) -> None:
        self.documents = 0

    def _vec(self, text: str) -> list[float]:
        words = text.lower()
        secret = float("password" in words or "credentials" in words)
        return [secret, 1.0 - secret, 0.01]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.documents += len(texts)
        return [self._vec(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vec(text)


def test_vectors_are_kept_in_the_file_for_the_next_store(namespace: str, index_dir: Path) -> None:
    pytest.importorskip("numpy")
    url = url_with(index_dir)
    query = "I forgot my login credentials"
    with SessionStore(url, namespace=namespace) as a:
        qa = liked(a, "s1", "How do I reset my password?", "Settings > Security.")
        first = CountingEmbeddings()
        search_memory(a, query, embeddings=first, lexical=False)  # queues, starts the embedder
        assert a.memory.wait_embedded(10)
        assert first.documents == 1
    with SessionStore(url, namespace=namespace) as b:
        second = CountingEmbeddings()
        hits = search_memory(b, query, embeddings=second, lexical=False)
        assert [e.qa_id for e, _ in hits] == [qa]  # by meaning, at once
        assert b.memory.wait_embedded(10)
        assert second.documents == 0  # nothing embedded again
