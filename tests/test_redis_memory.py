"""Positive memory on Redis: a memory query costs at most two round trips."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from _redis import REDIS_URL, Counter, require_redis

from feedback_plugin import PositiveMemoryRetriever, SessionStore


@pytest.fixture
def store() -> Iterator[SessionStore]:
    require_redis()
    s = SessionStore(REDIS_URL, namespace=f"test-{uuid.uuid4().hex}")
    yield s
    s.backend.drop()  # type: ignore[attr-defined]
    s.close()


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
