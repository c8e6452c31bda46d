"""What the fault tests' child processes run (no pytest import: children fork fast).

:func:`write_stream` records turn after turn and, once a call has returned,
appends a line to an acknowledgement file with one ``os.write`` (no buffer
to lose on SIGKILL)::

    turn t17 1718000000.123      record("s", ..., qa_id="t17") returned
    fb t15 1718000000.125        add_feedback on t15 returned True

The parent kills the child with SIGKILL at some point and compares.
"""

from __future__ import annotations

import os
import time

from feedback_plugin import SessionStore


def answer(i: int) -> str:
    # keep in step with conftest.expected_answer (this module must not import pytest)
    return f"a{i} " + ("🎉" * 10_000 if i % 10 == 0 else "ok")


def write_stream(
    location: str,
    namespace: str,
    write_behind: bool,
    acks: str,
    rate_every: int = 7,
    limit: int = 1_000_000,
) -> None:
    store = SessionStore(location, namespace=namespace or None, write_behind=write_behind)
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for i in range(limit):
        store.record("s", f"q{i}", answer(i), [f"c{i}"], metadata={"i": i}, qa_id=f"t{i}")
        os.write(fd, f"turn t{i} {time.time():.6f}\n".encode())
        if i % rate_every == 3:  # rate an earlier turn now and then
            j = i - 3
            if store.add_feedback("s", f"t{j}", f"fb{j}", j % 5 + 1):
                os.write(fd, f"fb t{j} {time.time():.6f}\n".encode())
    store.close()
    os.close(fd)


def read_acks(path: str) -> tuple[list[str], list[str], list[float]]:
    """``(acknowledged turns in order, acknowledged feedback, ack times)``; a torn last
    line (none is expected: one small write each) is ignored."""
    turns: list[str] = []
    feedback: list[str] = []
    times: list[float] = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return turns, feedback, times
    for line in lines[:-1]:  # the text after the last newline is unfinished
        kind, qa_id, stamp = line.split(" ")
        (turns if kind == "turn" else feedback).append(qa_id)
        if kind == "turn":
            times.append(float(stamp))
    return turns, feedback, times
