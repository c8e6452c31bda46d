"""Positive memory on Redis: a memory query costs at most two round trips."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from _redis import REDIS_URL, require_redis

from feedback_plugin import PositiveMemoryRetriever, SessionStore


@pytest.fixture
def store() -> Iterator[SessionStore]:
    require_redis()
    s = SessionStore(REDIS_URL, namespace=f"test-{uuid.uuid4().hex}")
    yield s
    s.backend.drop()  # type: ignore[attr-defined]
    s.close()


class Counter:
    """Counts the commands a redis-py client sends (each one a round trip here)."""

    def __init__(self, client: Any) -> None:
        self.commands: list[str] = []
        self._send = client.execute_command
        client.execute_command = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.commands.append(str(args[0]))
        return self._send(*args, **kwargs)


def test_a_memory_query_for_k_4_makes_at_most_two_round_trips(store: SessionStore) -> None:
    for i in range(8):
        turn = store.record("s1", f"How do I reset my password, case {i}?", f"Answer {i}.")
        store.flush()
        assert store.thumbs("s1", turn.qa_id, up=True)
    retriever = PositiveMemoryRetriever(store=store, k=4)
    assert len(retriever.invoke("password reset")) == 4  # the index is built and caught up
    counter = Counter(store.backend.client)  # type: ignore[attr-defined]
    docs = retriever.invoke("password reset")
    assert len(docs) == 4
    assert len(counter.commands) <= 2, counter.commands  # the feed head, then one MGET
