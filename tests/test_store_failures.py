"""SessionStore over a failing backend: the contract's return values, nothing half-written."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from feedback_plugin import SessionStore, StoreError
from feedback_plugin.backends import DiskBackend
from feedback_plugin.backends.base import Item, SessionKey
from feedback_plugin.errors import FeedbackPluginError


class _ExplodesMidway(Sequence[Item]):
    """A batch whose iteration fails after half its items (a disk filling up mid-write)."""

    def __init__(self, items: Sequence[Item]) -> None:
        self._items = list(items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: Any) -> Any:
        return self._items[i]

    def __iter__(self) -> Iterator[Item]:
        yield from self._items[: max(1, len(self._items) // 2)]
        raise OSError("No space left on device (midway through the batch)")


class FlakyBackend(DiskBackend):
    """The real diskcache backend, with switches that make its operations fail."""

    def __init__(self, directory: Path, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.fail_append = False
        self.fail_update = False
        self.fail_read = False
        self.fail_midway = False  # fail inside the transaction, after some writes

    def append(self, items: Sequence[Item]) -> None:
        if self.fail_append:
            raise OSError("disk unavailable (append)")
        if self.fail_midway:
            super().append(_ExplodesMidway(items))
        super().append(items)

    def update(self, key: SessionKey, qa_id: str, change: Callable[[str], str]) -> str | None:
        if self.fail_update:
            raise OSError("disk unavailable (update)")
        if self.fail_midway:

            def change_then_fail(payload: str) -> str:
                change(payload)
                raise OSError("No space left on device (midway through the update)")

            return super().update(key, qa_id, change_then_fail)
        return super().update(key, qa_id, change)

    def read(self, key: SessionKey, last_n: int | None = None) -> list[str]:
        if self.fail_read:
            raise OSError("disk unavailable (read)")
        return super().read(key, last_n)

    def get(self, key: SessionKey, qa_id: str) -> str | None:
        if self.fail_read:
            raise OSError("disk unavailable (get)")
        return super().get(key, qa_id)

    def delete_session(self, key: SessionKey) -> int:
        if self.fail_update:
            raise OSError("disk unavailable (delete)")
        return super().delete_session(key)

    def heal(self) -> None:
        self.fail_append = self.fail_update = self.fail_read = self.fail_midway = False


@pytest.fixture
def flaky(store_dir: Path) -> FlakyBackend:
    return FlakyBackend(store_dir)


@pytest.fixture
def fstore(flaky: FlakyBackend) -> Iterator[SessionStore]:
    """A write-behind store over the flaky backend whose queue waits until asked."""
    s = SessionStore(backend=flaky, flush_interval=10)
    yield s
    flaky.heal()
    s.close()


def on_disk(store_dir: Path, session_id: str = "s1", user: str | None = None) -> list[Any]:
    """What a second, healthy store on the same directory sees."""
    with SessionStore(store_dir) as other:
        return [e.model_dump() for e in other.get_session(session_id, user=user)]


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("feedback_plugin") and r.levelno >= logging.ERROR
    ]


# -- feedback never raises on a store failure -----------------------------------------


def test_feedback_returns_false_and_logs_when_the_update_fails(
    fstore: SessionStore, flaky: FlakyBackend, store_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    e = fstore.record("s1", "q", "a", wait=True)
    assert fstore.add_feedback("s1", e.qa_id, "original", 3)
    before = on_disk(store_dir)
    flaky.fail_update = True
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="feedback_plugin"):
        assert fstore.add_feedback("s1", e.qa_id, "new", 5) is False
        assert fstore.thumbs("s1", e.qa_id, up=False) is False
        assert fstore.delete_feedback("s1", e.qa_id) is False
    logged = errors_logged(caplog)
    assert len(logged) >= 3
    assert any("disk unavailable" in (r.exc_text or "") + r.getMessage() for r in logged)
    assert on_disk(store_dir) == before
    flaky.heal()
    assert fstore.add_feedback("s1", e.qa_id, "new", 5) is True
    assert fstore.get_session("s1")[0].feedback_score == 5


def test_failure_midway_through_an_update_changes_nothing(
    fstore: SessionStore, flaky: FlakyBackend, store_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    e = fstore.record("s1", "q", "a", wait=True)
    assert fstore.thumbs("s1", e.qa_id, up=True, feedback_text="liked")
    before = on_disk(store_dir)
    flaky.fail_midway = True
    with caplog.at_level(logging.ERROR, logger="feedback_plugin"):
        assert fstore.add_feedback("s1", e.qa_id, "changed my mind", 1) is False
        assert fstore.delete_feedback("s1", e.qa_id) is False
    assert errors_logged(caplog)
    flaky.heal()
    assert on_disk(store_dir) == before
    got = fstore.get_session("s1")[0]
    assert (got.feedback_text, got.feedback_score) == ("liked", 5)


def test_feedback_is_false_when_queued_turns_cannot_be_written(
    fstore: SessionStore, flaky: FlakyBackend, caplog: pytest.LogCaptureFixture
) -> None:
    e = fstore.record("s1", "q", "a")
    assert fstore.pending == 1
    flaky.fail_append = True
    with caplog.at_level(logging.ERROR, logger="feedback_plugin"):
        assert fstore.add_feedback("s1", e.qa_id, "x", 4) is False
    assert errors_logged(caplog)
    assert fstore.pending == 1  # the turn is still queued, not lost
    flaky.heal()
    assert fstore.add_feedback("s1", e.qa_id, "x", 4) is True
    assert fstore.get_session("s1")[0].feedback_score == 4


def test_bad_input_still_raises_while_the_backend_is_down(
    fstore: SessionStore, flaky: FlakyBackend
) -> None:
    e = fstore.record("s1", "q", "a", wait=True)
    flaky.fail_update = flaky.fail_read = True
    with pytest.raises(ValueError):
        fstore.add_feedback("s1", e.qa_id, "t", 0)
    with pytest.raises(ValueError):
        fstore.add_feedback("", e.qa_id, "t", 4)


# -- reads raise StoreError -------------------------------------------------------------


def test_reads_raise_store_error(fstore: SessionStore, flaky: FlakyBackend) -> None:
    e = fstore.record("s1", "q", "a", wait=True)
    flaky.fail_read = True
    with pytest.raises(StoreError) as info:
        fstore.get_session("s1")
    assert isinstance(info.value, FeedbackPluginError)
    assert isinstance(info.value, RuntimeError)
    assert "get_session" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(StoreError):
        fstore.get_session("s1", last_n=1)
    with pytest.raises(StoreError):
        fstore.get_entry("s1", e.qa_id)
    flaky.heal()
    assert fstore.get_session("s1") == [e]


def test_reads_raise_store_error_when_the_queue_cannot_be_written(
    fstore: SessionStore, flaky: FlakyBackend
) -> None:
    e = fstore.record("s1", "q", "a")
    flaky.fail_append = True
    with pytest.raises(StoreError):
        fstore.get_session("s1")  # never a silently incomplete answer
    flaky.heal()
    assert fstore.get_session("s1") == [e]


def test_delete_session_raises_store_error(fstore: SessionStore, flaky: FlakyBackend) -> None:
    e = fstore.record("s1", "q", "a", wait=True)
    flaky.fail_update = True
    with pytest.raises(StoreError):
        fstore.delete_session("s1")
    flaky.heal()
    assert fstore.get_session("s1") == [e]


# -- recording while the backend is down ----------------------------------------------------


def test_record_queues_while_down_and_flush_writes_after_recovery(
    fstore: SessionStore, flaky: FlakyBackend, store_dir: Path
) -> None:
    flaky.fail_append = True
    entries = [fstore.record("s1", f"q{i}", f"a{i}") for i in range(10)]  # never raises
    assert fstore.pending == 10
    with pytest.raises(StoreError):
        fstore.flush()
    assert fstore.pending == 10
    assert on_disk(store_dir) == []
    flaky.heal()
    fstore.flush()
    assert fstore.pending == 0
    assert on_disk(store_dir) == [e.model_dump() for e in entries]


def test_background_writer_retries_until_the_backend_recovers(
    flaky: FlakyBackend, store_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = SessionStore(backend=flaky, flush_interval=0.01)
    try:
        flaky.fail_append = True
        with caplog.at_level(logging.ERROR, logger="feedback_plugin"):
            started = time.monotonic()
            ids = [s.record("s1", f"q{i}", "a").qa_id for i in range(5)]
            assert time.monotonic() - started < 1  # the caller is never slowed down
            deadline = time.monotonic() + 5
            while not any("could not write" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the failed write was not logged"
                time.sleep(0.01)
        assert s.pending == 5
        flaky.heal()
        deadline = time.monotonic() + 8
        # no flush(): the writer thread retries on its own
        while [e["qa_id"] for e in on_disk(store_dir)] != ids:
            assert time.monotonic() < deadline, "queued turns were never written"
            time.sleep(0.05)
        assert s.pending == 0
    finally:
        flaky.heal()
        s.close()


def test_a_failed_batch_is_all_or_nothing(
    fstore: SessionStore, flaky: FlakyBackend, store_dir: Path
) -> None:
    first = fstore.record("s1", "q0", "a0", wait=True)
    entries = [fstore.record("s1", f"q{i}", f"a{i}") for i in range(1, 7)]
    other = fstore.record("s2", "q", "a")
    flaky.fail_midway = True
    with pytest.raises(StoreError):
        fstore.flush()
    flaky.heal()
    assert on_disk(store_dir) == [first.model_dump()]  # no half batch
    assert on_disk(store_dir, "s2") == []
    fstore.flush()
    assert on_disk(store_dir) == [e.model_dump() for e in [first, *entries]]  # once each
    assert on_disk(store_dir, "s2") == [other.model_dump()]


def test_record_wait_true_raises_store_error(
    fstore: SessionStore, flaky: FlakyBackend, store_dir: Path
) -> None:
    flaky.fail_append = True
    with pytest.raises(StoreError) as info:
        fstore.record("s1", "q", "a", wait=True)
    assert "record" in str(info.value)
    flaky.heal()
    assert on_disk(store_dir) == []


def test_record_on_a_synchronous_store_raises_store_error(
    flaky: FlakyBackend, store_dir: Path
) -> None:
    with SessionStore(backend=flaky, write_behind=False) as s:
        ok = s.record("s1", "q0", "a0")
        flaky.fail_append = True
        with pytest.raises(StoreError):
            s.record("s1", "q1", "a1")
        flaky.heal()
        assert s.get_session("s1") == [ok]


def test_close_raises_instead_of_dropping_queued_turns(
    fstore: SessionStore, flaky: FlakyBackend, store_dir: Path
) -> None:
    e = fstore.record("s1", "q", "a")
    flaky.fail_append = True
    with pytest.raises(StoreError):
        fstore.close()
    assert fstore.pending == 1
    flaky.heal()
    fstore.close()
    assert on_disk(store_dir) == [e.model_dump()]
