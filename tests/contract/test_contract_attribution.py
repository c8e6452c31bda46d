"""Memories that learn from the answers they fed, on every backend.

A turn records which remembered turns were handed to the model for it
(``memory_ids``); rating it charges them; a memory that fed at least two
answers rated down, and more down than up, leaves memory until it is itself
rated again.
"""

from __future__ import annotations

import asyncio

import pytest

from feedback_plugin import PositiveMemoryRetriever, SessionStore, analytics

from .conftest import Stores

Q, A = "How do I reset my password?", "Settings > Security > Reset."


def remembered(store: SessionStore, user: str = "ann") -> list[str]:
    docs = PositiveMemoryRetriever(store=store, user=user, k=5).invoke("reset my password")
    return [d.metadata["qa_id"] for d in docs]


def liked_memory(store: SessionStore, user: str = "ann") -> str:
    qa = store.record("old", Q, A, user=user).qa_id
    assert store.thumbs("old", qa, up=True, user=user)
    return qa


def test_memory_ids_are_kept_on_the_entry(stores: Stores) -> None:
    s = stores()
    memory = liked_memory(s)
    docs = PositiveMemoryRetriever(store=s, user="ann").invoke("password reset")
    turn = s.record("new", "password?", "Use the link.", user="ann", memory_ids=docs)
    plain = s.record("new", "hi", "hello", user="ann")
    stored = {e.qa_id: e for e in s.get_session("new", user="ann")}
    assert stored[turn.qa_id].memory_ids == [memory]
    assert stored[turn.qa_id].memory_sessions == {memory: "old"}
    assert stored[plain.qa_id].memory_ids == []
    # a bare qa_id (MemOS's retrieved_memory_ids) is kept as given
    bare = s.record("new", "q", "a", user="ann", memory_ids=[memory, memory])
    assert s.get_entry("new", bare.qa_id, user="ann").memory_ids == [memory]  # type: ignore[union-attr]


def test_a_memory_that_feeds_two_disliked_answers_leaves_memory(stores: Stores) -> None:
    s = stores()
    memory = liked_memory(s)
    assert remembered(s) == [memory]

    first = s.record("new", "reset?", "Settings.", user="ann", memory_ids=[("old", memory)])
    assert s.thumbs("new", first.qa_id, up=False, user="ann")
    assert remembered(s) == [memory]  # one disliked answer is not enough
    # a bare id is found in the user's sessions
    second = s.record("new2", "password reset?", "Settings.", user="ann", memory_ids=[memory])
    assert s.thumbs("new2", second.qa_id, up=False, user="ann")

    assert remembered(s) == []
    hurting = list(analytics.memories_that_hurt(s, user="ann"))
    assert [e.qa_id for e in hurting] == [memory]
    assert hurting[0].fed_outcomes == {first.qa_id: "negative", second.qa_id: "negative"}
    assert s.get_entry("old", memory, user="ann").remembered is False  # type: ignore[union-attr]

    # rated up again: its record starts over and it is back
    assert s.thumbs("old", memory, up=True, user="ann")
    assert remembered(s) == [memory]
    assert list(analytics.memories_that_hurt(s, user="ann")) == []


def test_liked_answers_outweigh_disliked_ones(stores: Stores) -> None:
    s = stores()
    memory = liked_memory(s)
    answers = [
        s.record(f"n{i}", "other", "a", user="ann", memory_ids=[("old", memory)]).qa_id
        for i in range(5)
    ]
    for i, up in enumerate([False, True, True, False]):
        assert s.thumbs(f"n{i}", answers[i], up=up, user="ann")
    assert remembered(s) == [memory]  # 2 down, 2 up: not more down than up
    assert s.thumbs("n4", answers[4], up=False, user="ann")
    assert remembered(s) == []  # 3 down, 2 up
    # changing a verdict moves it: one disliked answer rated up again brings it back
    assert s.thumbs("n0", answers[0], up=True, user="ann")
    assert remembered(s) == [memory]
    # a cleared rating takes the answer's verdict back out
    assert s.delete_feedback("n1", answers[1], user="ann")
    assert s.delete_feedback("n2", answers[2], user="ann")
    assert s.get_entry("old", memory, user="ann").fed_outcomes == {  # type: ignore[union-attr]
        answers[0]: "positive",
        answers[3]: "negative",
        answers[4]: "negative",
    }
    assert remembered(s) == []


def test_charging_never_crosses_users(stores: Stores) -> None:
    s = stores()
    memory = liked_memory(s, user="ann")
    mine = liked_memory(s, user="bob")
    # bob names ann's memory id: it is looked for among bob's turns only
    for i in range(2):
        qa = s.record(f"b{i}", "q", "a", user="bob", memory_ids=[memory]).qa_id
        assert s.thumbs(f"b{i}", qa, up=False, user="bob")
    assert remembered(s, "ann") == [memory]
    assert s.get_entry("old", memory, user="ann").fed_outcomes == {}  # type: ignore[union-attr]
    assert remembered(s, "bob") == [mine]


def test_a_memory_gone_meanwhile_does_not_block_the_rating(stores: Stores) -> None:
    s = stores()
    memory = liked_memory(s)
    qa = s.record("new", "q", "a", user="ann", memory_ids=[("old", memory)]).qa_id
    assert s.delete_session("old", user="ann") == 1
    assert s.thumbs("new", qa, up=False, user="ann")
    assert s.get_entry("new", qa, user="ann").feedback_score == 1  # type: ignore[union-attr]


def test_the_async_path_charges_too(stores: Stores) -> None:
    s = stores()
    memory = liked_memory(s)

    async def main() -> None:
        for i in range(2):
            turn = await s.arecord(f"n{i}", "q", "a", user="ann", memory_ids=[("old", memory)])
            assert await s.athumbs(f"n{i}", turn.qa_id, False, user="ann")

    asyncio.run(main())
    assert remembered(s) == []


@pytest.mark.parametrize("bad", ["one-string", [""], [3], [("s",)]])
def test_bad_memory_ids_are_refused(stores: Stores, bad: object) -> None:
    s = stores()
    with pytest.raises(ValueError):
        s.record("s", "q", "a", memory_ids=bad)  # type: ignore[arg-type]
    assert s.get_session("s") == []
