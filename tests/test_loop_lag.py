"""The event loop keeps ticking while many async store calls and memory searches run.

An async app (FastAPI, LangGraph, Chainlit) shares one event loop among all
its requests: a store call that blocked it would stall every other request.
A ticker task asks to wake every millisecond while 200 concurrent
``aget_session`` calls and memory searches run; how late it wakes is the
loop's lag. The bound (p99 under 20 ms) is a behaviour, not a speed figure:
one blocking SQLite call or Redis round trip on the loop, repeated 200
times, would put hundreds of milliseconds into the tail.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _redis import REDIS_URL, require_redis

from feedback_plugin import PositiveMemoryRetriever, SessionStore

pytestmark = pytest.mark.slow

SESSIONS, TURNS = 40, 10
TOPICS = ["password", "invoice", "export", "offline", "sharing", "backup", "billing", "login"]


@pytest.fixture(params=["disk", "redis"])
def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    if request.param == "disk":
        store = SessionStore(tmp_path / "store")
    else:
        require_redis()
        store = SessionStore(REDIS_URL, namespace=f"test-{uuid.uuid4().hex}")
    for s in range(SESSIONS):
        for t in range(TURNS):
            topic = TOPICS[(s + t) % len(TOPICS)]
            turn = store.record(
                f"s{s}", f"How do I change my {topic} setting {t}?", f"Open {topic} {s}-{t}."
            )
            if (s + t) % 3 == 0:
                store.thumbs(f"s{s}", turn.qa_id, True)
    store.ready_memory()  # built before the burst (a first query may rebuild)
    yield store
    if request.param == "redis":
        store.backend.drop()  # type: ignore[attr-defined]
    store.close()


async def _lags_during(work: list[asyncio.Future[object]]) -> list[float]:
    """How late (seconds) a 1 ms ticker wakes while ``work`` runs."""
    lags: list[float] = []
    done = asyncio.gather(*work)
    while not done.done():
        start = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - start - 0.001)
    await done
    return lags


async def test_the_loop_keeps_ticking_under_200_concurrent_calls(seeded: SessionStore) -> None:
    store = seeded
    retriever = PositiveMemoryRetriever(store=store, k=4)
    for _attempt in range(3):  # a shared machine may stall any process once: retry
        work = [
            asyncio.ensure_future(store.aget_session(f"s{i % SESSIONS}")) for i in range(100)
        ] + [
            asyncio.ensure_future(retriever.ainvoke(f"change my {TOPICS[i % len(TOPICS)]}"))
            for i in range(100)
        ]
        lags = await _lags_during(work)
        assert len(lags) >= 50  # the burst lasted long enough to measure
        results = [w.result() for w in work]
        assert all(len(r) == TURNS for r in results[:100])  # type: ignore[arg-type]
        assert all(r for r in results[100:])  # every search found liked turns
        p99 = statistics.quantiles(lags, n=100, method="inclusive")[98]
        if p99 < 0.020:
            break
    assert p99 < 0.020, f"loop lag p99 {p99 * 1000:.1f} ms over {len(lags)} ticks"
