"""The store's async methods, on diskcache and Redis."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _redis import REDIS_URL, require_redis

from feedback_plugin import SessionStore, TurnNotFoundError


@pytest.fixture(params=["disk", "redis"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    if request.param == "disk":
        store = SessionStore(tmp_path / "store")
    else:
        require_redis()
        store = SessionStore(REDIS_URL, namespace=f"test-{uuid.uuid4().hex}")
    yield store
    if request.param == "redis":
        store.backend.drop()  # type: ignore[attr-defined]
    store.close()


def test_every_async_method_has_the_signature_of_its_sync_twin() -> None:
    twins = [
        name for name in dir(SessionStore) if name.startswith("a") and name[1:] in dir(SessionStore)
    ]
    assert len(twins) >= 12
    for name in twins:
        sync = inspect.signature(getattr(SessionStore, name[1:]))
        asynchronous = inspect.signature(getattr(SessionStore, name))
        assert inspect.iscoroutinefunction(getattr(SessionStore, name)), name
        assert [(p.name, p.kind, p.default) for p in asynchronous.parameters.values()] == [
            (p.name, p.kind, p.default) for p in sync.parameters.values()
        ], name


async def test_the_async_methods_do_what_their_twins_do(any_store: SessionStore) -> None:
    store = any_store
    first = await store.arecord("s1", "How do I reset my password?", "Use the link.", user="al")
    second = await store.arecord("s1", "q2", "a2", user="al", wait=True)
    assert await store.aget_session("s1", user="al") == [first, second]
    assert await store.aget_session("s1") == []  # another user's turns stay theirs
    assert await store.aget_entry("s1", first.qa_id, user="al") == first
    assert await store.aget_many([("s1", second.qa_id), ("s1", "no")], user="al") == [second, None]
    assert await store.athumbs("s1", first.qa_id, True, user="al")
    rated = await store.arate("s1", second.qa_id, "ok", 4, user="al")
    assert rated.feedback_score == 4
    with pytest.raises(TurnNotFoundError):
        await store.arate("s1", "no-such-turn", feedback_score=4, user="al")
    assert await store.aadd_feedback("s1", first.qa_id, "great", user="al")
    assert (await store.aclear_rating("s1", second.qa_id, user="al")).feedback_score is None
    assert await store.adelete_feedback("s1", "no-such-turn", user="al") is False
    assert await store.alist_sessions(user="al") == ["s1"]
    await store.aflush()
    assert await store.adelete_session("s1", user="al") == 2
    await store.aclose()
