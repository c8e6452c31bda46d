"""Property-based tests of the store API (hypothesis), on every backend.

Arbitrary unicode ids and texts (``st.text()``: any code point but lone
surrogates, NUL included) must round-trip exactly and never collide.
Every example runs on a store of its own (a new namespace); on Redis each test
also checks at teardown that no key was created outside its namespaces.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback_plugin import InvalidFeedbackError, SessionStore

from .conftest import Stores

PROPERTY = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

ids = st.text(min_size=1)
users = st.none() | st.text(min_size=1, max_size=20)
texts = st.text()


@contextmanager
def own_store(stores: Stores, **kwargs: Any) -> Iterator[SessionStore]:
    store = stores.fresh(**kwargs)
    try:
        yield store
    finally:
        stores.discard(store)


@pytest.mark.slow
@PROPERTY
@given(
    session_id=ids,
    question=texts,
    answer=texts,
    context=st.lists(texts, max_size=3),
    user=users,
    qa_id=st.none() | ids,
    metadata=st.dictionaries(texts, st.none() | st.booleans() | st.integers() | texts, max_size=3),
)
def test_record_then_get_session_round_trips_exactly(
    stores: Stores,
    session_id: str,
    question: str,
    answer: str,
    context: list[str],
    user: str | None,
    qa_id: str | None,
    metadata: dict[str, Any],
) -> None:
    stores.watch_keys()
    with own_store(stores) as store:
        e = store.record(
            session_id, question, answer, context, user=user, metadata=metadata, qa_id=qa_id
        )
        assert (e.session_id, e.question, e.answer, e.context) == (
            session_id,
            question,
            answer,
            context,
        )
        assert (e.user_id, e.metadata) == (user, metadata)
        assert store.get_session(session_id, user=user) == [e]
        assert store.get_session(session_id, user=user, last_n=1) == [e]
        assert store.get_entry(session_id, e.qa_id, user=user) == e
        assert store.list_sessions(user=user) == [session_id]
        store.close()
        # another store object on the same data reads the same entry
        other = stores(location=store.location, namespace=store.namespace)
        assert other.get_session(session_id, user=user) == [e]
        other.close()


@PROPERTY
@given(
    session_id=ids,
    qa_id=ids,
    user=users,
    text=st.none() | texts,
    score=st.none() | st.integers(min_value=-2, max_value=7),
)
def test_feedback_on_arbitrary_unicode_ids(
    stores: Stores,
    session_id: str,
    qa_id: str,
    user: str | None,
    text: str | None,
    score: int | None,
) -> None:
    stores.watch_keys()
    with own_store(stores) as store:
        e = store.record(session_id, "q", "a", user=user, qa_id=qa_id)
        blank = text is None or not text.strip()
        valid_score = score is None or 1 <= score <= 5
        if not valid_score or (blank and score is None):
            try:
                store.add_feedback(session_id, qa_id, text, score, user=user)
            except InvalidFeedbackError:
                pass
            else:
                raise AssertionError("bad feedback was accepted")
            assert store.get_session(session_id, user=user) == [e]  # nothing changed
            return
        assert store.add_feedback(session_id, qa_id, text, score, user=user) is True
        (got,) = store.get_session(session_id, user=user)
        assert got.feedback_text == (None if blank else text)
        assert got.feedback_score == score
        assert got.feedback_time is not None
        assert got.model_dump(exclude={"feedback_text", "feedback_score", "feedback_time"}) == (
            e.model_dump(exclude={"feedback_text", "feedback_score", "feedback_time"})
        )
        # the same ids under another user, or a neighbouring id, are not that turn
        assert store.thumbs(session_id, qa_id, up=True, user=None if user else "someone") is False
        assert store.thumbs(session_id + "\x00", qa_id, up=True, user=user) is False
        assert store.thumbs(session_id, qa_id + "*", up=True, user=user) is False
        assert store.delete_feedback(session_id, qa_id, user=user) is True
        (cleared,) = store.get_session(session_id, user=user)
        assert (cleared.feedback_text, cleared.feedback_score) == (None, None)


@pytest.mark.slow
@PROPERTY
@given(keys=st.lists(st.tuples(users, ids), min_size=2, max_size=6, unique=True))
def test_ids_never_collide(stores: Stores, keys: list[tuple[str | None, str]]) -> None:
    stores.watch_keys()  # one SCAN before the first example, one after the last
    with own_store(stores) as store:
        entries = {
            key: store.record(key[1], repr(key), repr(key), user=key[0], qa_id=key[1])
            for key in keys
        }
        for (user, session_id), e in entries.items():
            assert store.get_session(session_id, user=user) == [e]
        for user in {u for u, _ in keys}:
            assert sorted(store.list_sessions(user=user)) == sorted(
                sid for u, sid in keys if u == user
            )
        # rating one turn changes no other
        user, session_id = keys[0]
        assert store.thumbs(session_id, session_id, up=True, user=user)
        for key in keys[1:]:
            assert store.get_session(key[1], user=key[0])[0].feedback_score is None
        # deleting one session deletes no other
        assert store.delete_session(session_id, user=user) == 1
        for key in keys[1:]:
            assert store.get_session(key[1], user=key[0]) == [entries[key]]
