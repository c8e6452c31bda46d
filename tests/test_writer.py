"""WriteBehind: the queue between record() and the backend."""

from __future__ import annotations

import itertools
import logging
import threading
import time
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


class TimedSink(Sink):
    """Also notes when each batch arrived and how big it was."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[float, int]] = []

    def write(self, batch: Sequence[int]) -> None:
        super().write(batch)
        self.batches.append((time.monotonic(), len(batch)))


def test_a_quiet_process_has_each_item_written_about_interval_later() -> None:
    sink = TimedSink()
    writer: WriteBehind[int] = WriteBehind(sink.write, interval=0.02, max_delay=5.0)
    try:
        for i in range(3):
            queued = time.monotonic()
            writer.put(i)
            while len(sink.items) <= i:
                assert time.monotonic() - queued < 2.0, "a lone item was not written"
                time.sleep(0.005)
            time.sleep(0.05)  # quiet: nothing else arrives
        assert [n for _, n in sink.batches] == [1, 1, 1]  # no waiting for more that never came
    finally:
        writer.close()


@pytest.mark.slow
def test_a_busy_stream_is_gathered_into_large_batches_written_within_max_delay() -> None:
    sink = TimedSink()
    writer: WriteBehind[int] = WriteBehind(
        sink.write, interval=0.01, max_delay=0.15, batch_size=100_000
    )
    try:
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < 1.0:  # a steady stream: an item every ~1 ms
            writer.put(i)
            i += 1
            time.sleep(0.001)
        writer.flush()
        assert sink.items == list(range(i))  # every item, in order
        times = [start] + [t for t, _ in sink.batches]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # Written while the stream went on, not only at the end, and never later than
        # max_delay (+ slack for a loaded machine) after the previous write ...
        assert len(sink.batches) >= 3
        assert max(gaps[:-1]) < 0.15 + 0.5
        # ... but in batches much larger than what one 10 ms interval gathers.
        assert max(n for _, n in sink.batches) > 3 * (i / 100)
    finally:
        writer.close()


def test_a_full_batch_is_written_without_waiting_for_max_delay() -> None:
    sink = TimedSink()
    writer: WriteBehind[int] = WriteBehind(sink.write, interval=0.01, max_delay=30.0, batch_size=50)
    try:
        start = time.monotonic()
        for i in range(200):
            writer.put(i)
            time.sleep(0.001)
        while len(sink.items) < 150:
            assert time.monotonic() - start < 10, "full batches waited for max_delay"
            time.sleep(0.01)
    finally:
        writer.close()
    assert sink.items == list(range(200))
