"""WriteBehind: the queue between record() and the backend."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import pytest

from feedback_plugin.writer import WriteBehind


class Sink:
    """A backend stand-in that stores batches, and can be made to fail."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.failing = False
        self.lock = threading.Lock()

    def write(self, batch: Sequence[int]) -> None:
        if self.failing:
            raise OSError("disk on fire")
        with self.lock:
            self.items.extend(batch)


def test_a_full_queue_on_a_healthy_backend_pushes_back_instead_of_dropping() -> None:
    sink = Sink()
    writer: WriteBehind[int] = WriteBehind(sink.write, interval=10.0, max_pending=50)
    for i in range(5_000):  # far faster than a 10 s writer pause: the queue fills up
        writer.put(i)
    writer.close()
    assert writer.dropped == 0
    assert sink.items == list(range(5_000))  # all of them, in order


def test_a_full_queue_on_a_failing_backend_drops_the_oldest_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = Sink()
    sink.failing = True
    writer: WriteBehind[int] = WriteBehind(sink.write, interval=10.0, max_pending=10)
    with caplog.at_level(logging.ERROR, logger="feedback_plugin"):
        for i in range(25):
            writer.put(i)
    assert writer.dropped == 15
    assert "dropped" in caplog.text
    sink.failing = False
    writer.close()
    assert sink.items == list(range(15, 25))  # the newest ten survived, in order


def test_flush_writes_everything_queued_and_close_stops_the_thread() -> None:
    sink = Sink()
    writer: WriteBehind[int] = WriteBehind(sink.write, interval=0.01, name="test-writer-close")
    for i in range(100):
        writer.put(i)
    writer.flush()
    assert sink.items == list(range(100))
    writer.close()
    assert not any(t.name == writer.name and t.is_alive() for t in threading.enumerate())
