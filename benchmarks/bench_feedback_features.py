"""What the reference systems' features cost: session ratings and memory attribution.

On each backend (diskcache in a temporary directory, Redis, PostgreSQL; a server
that does not answer is skipped), interleaved in rounds so that a busy moment
of the machine hits every variant alike, medians of per-call times:

* ``session_thumbs`` (read the first turn, then one atomic update of it) against a
  turn's ``thumbs`` (one update). Target: at most 3x.
* ``get_session_feedback`` (the first turn) against ``get_entry``. Target: at most 2x.
* ``get_session_feedback`` in a session of 1,000 turns against one of 10: the rating
  lives on the first turn, found without reading the session. Target: at most 1.5x.
* rating an answer that was fed 3 memories (each memory told: 3 more updates)
  against one fed none (information).
* ``record(wait=True)`` with 3 memory ids against none (information).

Run: ``python benchmarks/bench_feedback_features.py [--rounds 15] [--calls 40]``.
Do not run it while tests or other benchmarks run: the machine has 2 shared CPUs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    Row,
    drop_namespace,
    postgres_unreachable,
    print_rows,
    redis_unreachable,
)

from feedback_plugin import SessionStore

REDIS_URL = os.environ.get("FEEDBACK_PLUGIN_TEST_REDIS", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "FEEDBACK_PLUGIN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def per_call_us(fn: Callable[[int], object], calls: int) -> float:
    """The median time of one call of ``fn(i)`` over ``calls`` calls, in µs."""
    times = []
    for i in range(calls):
        t0 = time.perf_counter_ns()
        fn(i)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000


def interleaved(
    variants: dict[str, Callable[[int], object]], rounds: int, calls: int
) -> dict[str, float]:
    """Each variant's median per-call µs over ``rounds`` rounds, the variants taking turns
    inside every round (the order rotating), so that load hits them alike."""
    names = list(variants)
    found: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            found[n].append(per_call_us(variants[n], calls))
    return {n: statistics.median(v) for n, v in found.items()}


def ratio_row(name: str, a: float, b: float, limit: float | None) -> Row:
    value = f"{a:.0f} / {b:.0f} µs = {a / b:.2f}x"
    if limit is None:
        return Row(name, value)
    return Row(name, value, f"<= {limit}x", a / b <= limit)


def bench_backend(label: str, location: str, rounds: int, calls: int) -> list[Row]:
    namespace = f"bench-features-{uuid.uuid4().hex[:8]}"
    store = SessionStore(location, namespace=namespace, write_behind=False)
    try:
        small = [store.record("small", f"q{i}", f"a{i}").qa_id for i in range(10)]
        for i in range(1000):
            store.record("long", f"q{i}", f"a{i}", wait=False)  # queued, written in batches
        store.flush()
        memories = []
        for i in range(3):
            qa = store.record("memories", f"memory question {i}", f"memory answer {i}").qa_id
            store.thumbs("memories", qa, up=True)
            memories.append(("memories", qa))
        fed = [store.record("fed", f"fq{i}", "a", memory_ids=memories).qa_id for i in range(8)]
        plain = [store.record("plain", f"pq{i}", "a").qa_id for i in range(8)]

        ops = interleaved(
            {
                "thumbs": lambda i: store.thumbs("small", small[i % 10], up=bool(i % 2)),
                "session_thumbs": lambda i: store.session_thumbs("small", up=bool(i % 2)),
                "get_entry": lambda i: store.get_entry("small", small[i % 10]),
                "get_session_feedback": lambda i: store.get_session_feedback("small"),
                "get_session_feedback_long": lambda i: store.get_session_feedback("long"),
                "rate_fed": lambda i: store.thumbs("fed", fed[i % 8], up=bool(i % 2)),
                "rate_plain": lambda i: store.thumbs("plain", plain[i % 8], up=bool(i % 2)),
                "record_fed": lambda i: store.record("r", "q", "a", memory_ids=memories),
                "record_plain": lambda i: store.record("r", "q", "a"),
            },
            rounds,
            calls,
        )
        return [
            ratio_row(
                f"{label}: session_thumbs / thumbs",
                ops["session_thumbs"],
                ops["thumbs"],
                3.0,
            ),
            ratio_row(
                f"{label}: get_session_feedback / get_entry",
                ops["get_session_feedback"],
                ops["get_entry"],
                2.0,
            ),
            ratio_row(
                f"{label}: get_session_feedback, 1,000 turns / 10 turns",
                ops["get_session_feedback_long"],
                ops["get_session_feedback"],
                1.5,
            ),
            ratio_row(
                f"{label}: rating an answer fed 3 memories / fed none",
                ops["rate_fed"],
                ops["rate_plain"],
                None,
            ),
            ratio_row(
                f"{label}: record(wait=True) with 3 memory ids / none",
                ops["record_fed"],
                ops["record_plain"],
                None,
            ),
        ]
    finally:
        store.close()
        if label != "diskcache":
            drop_namespace(location, namespace)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    print(f"load average before: {load_average()}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        places = [("diskcache", tmp)]
        if not redis_unreachable(REDIS_URL):
            places.append(("Redis", REDIS_URL))
        if not postgres_unreachable(POSTGRES_URL):
            places.append(("PostgreSQL", POSTGRES_URL))
        for label, location in places:
            rows += bench_backend(label, location, args.rounds, args.calls)
    print(f"load average after: {load_average()}\n")
    print_rows(rows)


if __name__ == "__main__":
    main()
