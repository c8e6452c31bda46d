"""Session ratings (a whole conversation rated), on every backend.

``add_session_feedback`` / ``session_thumbs`` / ``delete_session_feedback`` /
``get_session_feedback`` and their async twins: the same validation, scoping
and return values as turn feedback, atomic across processes.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from feedback_plugin import InvalidFeedbackError, InvalidIdError, SessionFeedback

from .conftest import Stores


def test_a_session_is_rated_changed_and_cleared(stores: Stores) -> None:
    s = stores()
    first = s.record("chat", "Hi?", "Hello.", user="ann")
    s.record("chat", "Capital of France?", "Paris.", user="ann")
    assert s.get_session_feedback("chat", user="ann") is None

    before = datetime.now(timezone.utc)
    assert s.session_thumbs("chat", up=True, feedback_text="great chat", user="ann")
    rating = s.get_session_feedback("chat", user="ann")
    assert isinstance(rating, SessionFeedback)
    assert (rating.feedback_score, rating.feedback_text) == (5, "great chat")
    assert before - timedelta(seconds=1) <= rating.feedback_time <= datetime.now(timezone.utc)

    # only the fields given change: a new score keeps the comment
    assert s.add_session_feedback("chat", feedback_score=2, user="ann")
    rating = s.get_session_feedback("chat", user="ann")
    assert rating is not None and (rating.feedback_score, rating.feedback_text) == (
        2,
        "great chat",
    )

    # the turns and their own ratings are untouched
    assert s.thumbs("chat", first.qa_id, up=False, user="ann")
    assert [e.feedback_score for e in s.get_session("chat", user="ann")] == [1, None]
    assert s.get_session_feedback("chat", user="ann").feedback_score == 2  # type: ignore[union-attr]

    assert s.delete_session_feedback("chat", user="ann")
    assert s.get_session_feedback("chat", user="ann") is None
    assert [e.feedback_score for e in s.get_session("chat", user="ann")] == [1, None]


def test_unknown_sessions_and_other_users_get_false(stores: Stores) -> None:
    s = stores()
    s.record("chat", "q", "a", user="ann")
    assert s.session_thumbs("nope", up=True, user="ann") is False
    assert s.session_thumbs("chat", up=True, user="bob") is False
    assert s.session_thumbs("chat", up=True) is False  # the no-user owner is another owner
    assert s.delete_session_feedback("chat", user="bob") is False
    assert s.get_session_feedback("chat", user="bob") is None
    assert s.get_session_feedback("chat", user="ann") is None  # nothing was written
    with pytest.raises(LookupError):
        s.rate_session("chat", feedback_score=4, user="bob")


def test_bad_ratings_are_refused_and_change_nothing(stores: Stores) -> None:
    s = stores()
    s.record("chat", "q", "a")
    assert s.add_session_feedback("chat", "fine", 4)
    for text, score in [(None, None), (None, 0), (None, 6), (None, True), ("x", 4.0), (7, None)]:
        with pytest.raises(InvalidFeedbackError):
            s.add_session_feedback("chat", text, score)  # type: ignore[arg-type]
    with pytest.raises(InvalidFeedbackError):
        s.session_thumbs("chat", up="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidIdError):
        s.add_session_feedback("", "x", 4)
    rating = s.get_session_feedback("chat")
    assert rating is not None and (rating.feedback_score, rating.feedback_text) == (4, "fine")


def test_a_queued_first_turn_can_be_rated_at_once(stores: Stores) -> None:
    s = stores(write_behind=True, flush_interval=60)
    s.record("fresh", "q", "a", user="ann")  # still queued
    assert s.session_thumbs("fresh", up=False, user="ann")
    assert s.get_session_feedback("fresh", user="ann").feedback_score == 1  # type: ignore[union-attr]


def test_the_rating_survives_more_turns_and_an_export(stores: Stores) -> None:
    s = stores()
    s.record("chat", "q0", "a0")
    assert s.session_thumbs("chat", up=True)
    for i in range(1, 6):
        s.record("chat", f"q{i}", f"a{i}")
    assert s.get_session_feedback("chat").feedback_score == 5  # type: ignore[union-attr]
    entries = sorted(s.iter_entries(), key=lambda e: e.time)  # a scan has no set order
    other = stores.fresh()
    other.import_entries(entries)
    assert other.get_session_feedback("chat").feedback_score == 5  # type: ignore[union-attr]


def test_concurrent_session_ratings_lose_no_field(stores: Stores) -> None:
    """A comment and a score written at the same time both land (one atomic update each)."""
    s = stores()
    s.record("chat", "q", "a")
    errors: list[BaseException] = []

    def write(kind: int) -> None:
        try:
            for i in range(15):
                if kind == 0:
                    assert s.add_session_feedback("chat", feedback_text=f"comment {i}")
                else:
                    assert s.add_session_feedback("chat", feedback_score=1 + i % 5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rating = s.get_session_feedback("chat")
    assert rating is not None
    assert (rating.feedback_text, rating.feedback_score) == ("comment 14", 5)


def test_a_rating_made_in_another_process_is_read_here(stores: Stores, run_child: Any) -> None:
    s = stores()
    s.record("chat", "q", "a", user="ann")
    s.flush()
    proc = run_child(
        """
        s = open_store()
        assert s.session_thumbs("chat", up=False, feedback_text="off topic", user="ann")
        """,
        s,
    )
    assert proc.returncode == 0, proc.stderr
    rating = s.get_session_feedback("chat", user="ann")
    assert rating is not None and (rating.feedback_score, rating.feedback_text) == (1, "off topic")


def test_the_async_twins(stores: Stores) -> None:
    s = stores()

    async def main() -> None:
        await s.arecord("chat", "q", "a", user="ann")
        assert await s.asession_thumbs("chat", True, "good", user="ann")
        rating = await s.aget_session_feedback("chat", user="ann")
        assert rating is not None and (rating.feedback_score, rating.feedback_text) == (5, "good")
        assert await s.aadd_session_feedback("chat", None, 3, user="ann")
        assert (await s.aget_session_feedback("chat", user="ann")).feedback_score == 3  # type: ignore[union-attr]
        assert await s.aadd_session_feedback("gone", None, 3, user="ann") is False
        assert await s.adelete_session_feedback("chat", user="ann")
        assert await s.aget_session_feedback("chat", user="ann") is None
        assert await s.adelete_session_feedback("chat", user="bob") is False
        rating = await s.arate_session("chat", "again", 4, user="ann")
        assert (rating.feedback_score, rating.feedback_text) == (4, "again")
        with pytest.raises(LookupError):
            await s.arate_session("chat", None, 4, user="bob")
        await s.aclear_session_rating("chat", user="ann")
        assert await s.aget_session_feedback("chat", user="ann") is None

    asyncio.run(main())
