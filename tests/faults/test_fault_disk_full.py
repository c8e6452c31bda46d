"""A full or read-only store directory (diskcache).

Four ways to break the directory under a running store:

* ``tmpfs-full``: the store lives on a tiny tmpfs that a filler file fills up;
* ``tmpfs-readonly``: that tmpfs is remounted read-only;
* ``sqlite-full``: SQLite's own cap, ``DiskBackend(settings={"sqlite_max_page_count": 1})``
  (clamped to the file's current size: the database cannot grow);
* ``sqlite-readonly``: ``DiskBackend(settings={"sqlite_query_only": 1})``.

The tmpfs variants need ``mount`` (root with CAP_SYS_ADMIN) and are skipped
without it; the SQLite variants run everywhere. In each: ``record(wait=True)``
raises :class:`StoreError` naming the operation, the store and SQLite's
reason; ``add_feedback`` returns ``False`` and logs; a chain with the handler
still answers; and once the fault is lifted, every turn recorded before it is
intact, nothing half-written appears, and the turns the chain made during the
fault arrive from the write-behind queue.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from feedback_plugin import FeedbackCallbackHandler, SessionStore, StoreError
from feedback_plugin.backends import DiskBackend

from .conftest import assert_consistent, expected_answer, wait_for

SQLITE_DEFAULT_MAX_PAGES = 1073741823
BIG = "x" * 20_000  # stored inside SQLite (below diskcache's 32 KB file threshold): needs pages
PROMPT = ChatPromptTemplate.from_messages([("human", "{question}")])


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except OSError as exc:  # no mount binary
        return subprocess.CompletedProcess(["mount", *args], 127, "", str(exc))


class Fault:
    """One way of making the store directory full or read-only, and of lifting it."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.mount_point = root / "mnt"
        self.mounted = False
        self.directory = (self.mount_point if kind.startswith("tmpfs") else root) / "store"
        self.store: SessionStore | None = None

    def setup(self) -> None:
        if not self.kind.startswith("tmpfs"):
            return
        self.mount_point.mkdir()
        result = _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(self.mount_point))
        if result.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here ({result.stderr.strip()}): "
                "the sqlite-* variants cover this fault"
            )
        self.mounted = True

    def open(self) -> SessionStore:
        """The store the app uses before, during and after the fault (one object)."""
        settings: dict[str, Any] = {}
        self.store = SessionStore(backend=DiskBackend(self.directory, settings=settings))
        return self.store

    def apply(self) -> None:
        assert self.store is not None
        backend: Any = self.store.backend
        if self.kind == "tmpfs-full":
            with open(self.mount_point / "filler", "wb", buffering=0) as f:
                for size in (1 << 16, 1 << 12, 1 << 9, 1):
                    try:
                        while True:
                            f.write(b"\0" * size)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC
        elif self.kind == "tmpfs-readonly":
            self.store.close()  # no file may be open for writing when remounting read-only
            result = _mount("-o", "remount,ro", str(self.mount_point))
            assert result.returncode == 0, result.stderr
        else:  # sqlite-*: reopen the backend's cache with a pragma that refuses the writes
            pragma = "sqlite_max_page_count" if self.kind == "sqlite-full" else "sqlite_query_only"
            backend.settings[pragma] = 1
            backend.close()

    def lift(self) -> None:
        assert self.store is not None
        backend: Any = self.store.backend
        if self.kind == "tmpfs-full":
            (self.mount_point / "filler").unlink()
        elif self.kind == "tmpfs-readonly":
            result = _mount("-o", "remount,rw", str(self.mount_point))
            assert result.returncode == 0, result.stderr
        elif self.kind == "sqlite-full":
            # diskcache keeps settings in the directory: give the default back explicitly
            backend.settings["sqlite_max_page_count"] = SQLITE_DEFAULT_MAX_PAGES
            backend.close()
        else:
            del backend.settings["sqlite_query_only"]  # never stored: the open failed
            backend.close()

    def teardown(self) -> None:
        if self.store is not None:
            with contextlib.suppress(StoreError):
                self.store.close()
        if self.mounted:
            _mount("-o", "remount,rw", str(self.mount_point))
            if subprocess.run(["umount", str(self.mount_point)], timeout=30).returncode:
                subprocess.run(["umount", "-l", str(self.mount_point)], timeout=30)


@pytest.fixture(params=["tmpfs-full", "tmpfs-readonly", "sqlite-full", "sqlite-readonly"])
def fault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fault]:
    f = Fault(request.param, tmp_path)
    try:
        f.setup()
        yield f
    finally:
        f.teardown()


def test_full_or_read_only_store(fault: Fault, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="feedback_plugin")
    store = fault.open()
    # -- before: turns (and ratings) written for sure --------------------------------------
    for i in range(12):
        store.record(
            "s", f"q{i}", expected_answer(i), [f"c{i}"], metadata={"i": i}, qa_id=f"t{i}", wait=True
        )
        if i % 3 == 0:
            assert store.add_feedback("s", f"t{i}", f"fb{i}", i % 5 + 1)
    before = [e.model_dump() for e in store.get_session("s")]
    assert len(before) == 12

    fault.apply()

    # -- record(wait=True): a clear StoreError ----------------------------------------------
    with pytest.raises(StoreError) as info:
        store.record("s", "q-during", BIG, qa_id="during", wait=True)
    message = str(info.value)
    assert message.startswith(f"record failed on {store.location}"), message
    reason = message.lower()
    assert any(word in reason for word in ("full", "readonly", "read-only", "unable to open")), (
        message
    )

    # -- add_feedback: False, logged, nothing changed ----------------------------------------
    caplog.clear()
    assert store.add_feedback("s", "t1", BIG, 4) is False
    assert any(
        r.levelno >= logging.ERROR and "not stored" in r.getMessage() for r in caplog.records
    ), [r.getMessage() for r in caplog.records]

    # -- a chain with the handler still answers; the writer logs its failure -----------------
    caplog.clear()
    chain = PROMPT | FakeListChatModel(responses=["first", "second"]) | StrOutputParser()
    run_ids = [uuid.uuid4(), uuid.uuid4()]
    for run_id, answer in zip(run_ids, ["first", "second"], strict=True):
        config: Any = {
            "callbacks": [FeedbackCallbackHandler(store)],
            "metadata": {"session_id": "chat"},
            "run_id": run_id,
        }
        assert chain.invoke({"question": f"asked {answer}"}, config=config) == answer
    assert wait_for(
        lambda: any("could not write" in r.getMessage() for r in caplog.records), timeout=10
    ), [r.getMessage() for r in caplog.records]
    assert store.pending == 2  # kept, not dropped

    fault.lift()

    # -- after: everything from before intact, the chain's turns delivered -------------------
    store.flush()
    assert [e.model_dump() for e in store.get_session("s")] == before  # t1 has no BIG comment
    assert [e.qa_id for e in store.get_session("chat")] == [str(r) for r in run_ids]
    store.close()
    with SessionStore(fault.directory) as again:  # a fresh handle reads the same
        entries = assert_consistent(again)
        assert sorted(e.qa_id for e in entries) == sorted(
            [f"t{i}" for i in range(12)] + [str(r) for r in run_ids]
        )
        assert [e.model_dump() for e in again.get_session("s")] == before
        assert again.get_entry("s", "during") is None  # the refused turn left no trace
        assert again.add_feedback("s", "t1", "works again", 5)
        again.record("s", "q-after", "a", wait=True)
    if fault.kind == "sqlite-full":  # the cap was lifted for good, in the directory too
        with SessionStore(fault.directory) as again:
            again.record("s", "more", BIG * 10, wait=True)
