"""SessionQAEntry and the shared validators in feedback_plugin.models."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from feedback_plugin import InvalidFeedbackError, SessionQAEntry
from feedback_plugin.errors import FeedbackPluginError, InvalidIdError
from feedback_plugin.models import check_feedback, check_id, check_score, check_user


def make(**kw: object) -> SessionQAEntry:
    base: dict[str, object] = {"qa_id": "q1", "session_id": "s1", "question": "Q?", "answer": "A."}
    base.update(kw)
    return SessionQAEntry(**base)  # type: ignore[arg-type]


# -- SessionQAEntry -----------------------------------------------------------


def test_entry_defaults() -> None:
    before = datetime.now(timezone.utc)
    e = make()
    after = datetime.now(timezone.utc)
    assert (e.qa_id, e.session_id, e.question, e.answer) == ("q1", "s1", "Q?", "A.")
    assert e.context == []
    assert e.feedback_text is None
    assert e.feedback_score is None
    assert e.feedback_time is None
    assert e.user_id is None
    assert e.metadata == {}
    assert before <= e.time <= after


def test_entry_mutable_defaults_are_not_shared() -> None:
    a, b = make(), make()
    a.context.append("doc")
    a.metadata["k"] = 1
    assert b.context == []
    assert b.metadata == {}


def test_entry_has_every_contract_field() -> None:
    fields = set(SessionQAEntry.model_fields)
    assert {
        "qa_id",
        "session_id",
        "question",
        "answer",
        "context",
        "time",
        "feedback_text",
        "feedback_score",
        "feedback_time",
        "user_id",
        "metadata",
    } <= fields


def test_default_time_is_tz_aware_utc() -> None:
    e = make()
    assert e.time.tzinfo is not None
    assert e.time.utcoffset() == timedelta(0)


def test_naive_time_is_read_as_utc() -> None:
    naive = datetime(2024, 5, 1, 12, 30, 0)
    e = make(time=naive, feedback_time=naive)
    assert e.time == datetime(2024, 5, 1, 12, 30, 0, tzinfo=timezone.utc)
    assert e.time.utcoffset() == timedelta(0)
    assert e.feedback_time == datetime(2024, 5, 1, 12, 30, 0, tzinfo=timezone.utc)


def test_aware_time_is_converted_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    e = make(time=datetime(2024, 5, 1, 14, 30, tzinfo=plus2))
    assert e.time.utcoffset() == timedelta(0)
    assert e.time.hour == 12
    assert e.time == datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)


def test_entry_json_round_trip_keeps_everything() -> None:
    e = make(
        context=["d1", "d2"],
        feedback_text="nice \x00 🎉",
        feedback_score=4,
        feedback_time=datetime(2024, 1, 1, tzinfo=timezone.utc),
        user_id="alice",
        metadata={"model": "m", "tags": ["a", "b"], "n": 1},
        answer="x\x00y 😀",
    )
    back = SessionQAEntry.model_validate_json(e.model_dump_json())
    assert back == e
    assert back.time.tzinfo is not None


def test_entry_requires_the_core_fields() -> None:
    with pytest.raises(ValidationError):
        SessionQAEntry(qa_id="q", session_id="s", question="q")  # type: ignore[call-arg]


def test_is_rated() -> None:
    assert not make().is_rated
    assert make(feedback_score=3).is_rated
    # a rating is a score (feedback_plugin.ratings): a comment or a correction alone is not one
    assert not make(feedback_text="hm").is_rated
    assert not make(correction="better").is_rated


# -- check_score ----------------------------------------------------------------


@pytest.mark.parametrize("score", [1, 2, 3, 4, 5])
def test_check_score_accepts_1_to_5(score: int) -> None:
    assert check_score(score) == score


def test_check_score_none_is_no_score() -> None:
    assert check_score(None) is None


@pytest.mark.parametrize("bad", [0, 6, -1, 3.5, 4.0, True, False, "5", "4", [4], 10**20])
def test_check_score_rejects(bad: object) -> None:
    with pytest.raises(InvalidFeedbackError):
        check_score(bad)


def test_invalid_feedback_error_is_value_error() -> None:
    assert issubclass(InvalidFeedbackError, ValueError)
    assert issubclass(InvalidFeedbackError, FeedbackPluginError)
    with pytest.raises(ValueError, match="feedback_score"):
        check_score(0)


# -- check_feedback -------------------------------------------------------------


def test_check_feedback_text_and_score() -> None:
    assert check_feedback("good", 5)[:2] == ("good", 5)
    assert check_feedback("good", None)[:2] == ("good", None)
    assert check_feedback(None, 2)[:2] == (None, 2)


def test_check_feedback_blank_text_is_no_text() -> None:
    assert check_feedback("   ", 3)[:2] == (None, 3)
    assert check_feedback("", 3)[:2] == (None, 3)


@pytest.mark.parametrize("text", [None, "", "  \n\t"])
def test_check_feedback_needs_text_or_score(text: str | None) -> None:
    with pytest.raises(InvalidFeedbackError):
        check_feedback(text, None)


@pytest.mark.parametrize("bad", [0, 6, -1, 3.5, True, "5"])
def test_check_feedback_rejects_bad_score_even_with_text(bad: object) -> None:
    with pytest.raises(InvalidFeedbackError):
        check_feedback("some text", bad)


@pytest.mark.parametrize("bad", [5, b"bytes", ["x"]])
def test_check_feedback_rejects_non_string_text(bad: object) -> None:
    with pytest.raises(InvalidFeedbackError):
        check_feedback(bad, 4)


# -- check_id / check_user ------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["s", "../../x", "a:b*", "*", "..", "x" * 500, "émoji 🎉", "a\x00b"]
)
def test_check_id_accepts_any_non_empty_string(value: str) -> None:
    assert check_id(value) == value


@pytest.mark.parametrize("bad", ["", None, 5, b"s1"])
def test_check_id_rejects(bad: object) -> None:
    with pytest.raises(InvalidIdError) as info:
        check_id(bad)
    assert isinstance(info.value, ValueError)


def test_check_id_names_the_field() -> None:
    with pytest.raises(ValueError, match="qa_id"):
        check_id("", "qa_id")


def test_check_user() -> None:
    assert check_user(None) is None
    assert check_user("alice") == "alice"
    with pytest.raises(ValueError):
        check_user("")


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_outside_utc_is_a_validation_error(when: str) -> None:
    with pytest.raises(ValidationError):
        SessionQAEntry(qa_id="q", session_id="s", question="", answer="", time=when)
