"""The REST API's request and response bodies (their OpenAPI schemas), and the
session summary the session list answers with."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from ..errors import InvalidFeedbackError
from ..models import (
    MAX_ID_LENGTH,
    MAX_SCORE,
    MAX_TEXT_LENGTH,
    MIN_SCORE,
    SessionFeedback,
    SessionQAEntry,
    check_feedback,
    check_id,
    check_score,
    check_text,
)
from ..ratings import (
    NEGATIVE_MAX_SCORE,
    NEGATIVE_SCORE,
    POSITIVE_MIN_SCORE,
    POSITIVE_SCORE,
    is_negative,
    is_positive,
    is_rated,
)
from .explained_memory import FoundBy, Search

__all__ = [
    "KEEP",
    "MAX_MEMORY_IDS",
    "ErrorResponse",
    "FeedbackAnswer",
    "FeedbackFilter",
    "FeedbackRequest",
    "MemoryHit",
    "MemoryRef",
    "Rating",
    "Ratings",
    "SessionFeedbackRequest",
    "SessionRating",
    "SessionSummary",
    "Turn",
    "TurnRequest",
    "WordsRequest",
    "first_rating",
    "rating_of",
    "session_rating",
    "summary",
]

MAX_MEMORY_IDS = 100
"""The most remembered turns one recorded turn may name (``POST /api/turns``)."""

Rating = Literal["positive", "negative"]
"""A rating in words: ``positive`` stores thumbs up's score, ``negative`` thumbs down's."""

_RATING_SCORE = {"positive": POSITIVE_SCORE, "negative": NEGATIVE_SCORE}
_THUMBS_RATING = {"up": "positive", "down": "negative"}


class ErrorResponse(BaseModel):
    """Every error except a 422: ``{"detail": "what went wrong"}``."""

    detail: str


_Text = Annotated[str, WithJsonSchema({"type": "string", "maxLength": MAX_TEXT_LENGTH})]
"""A text field. Its length is checked by ``check_feedback`` (the store's own rule),
not by pydantic: a length constraint makes pydantic refuse lone surrogates."""

_Id = Annotated[str, WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH})]
"""An id field, checked by ``check_id`` (the store's rule) for the same reason."""


class _RatingRequest(BaseModel):
    """A rating: a score, thumbs or a rating in words (one of them, or thumbs and a
    rating that agree), and/or a comment."""

    model_config = ConfigDict(extra="forbid")

    score: int | None = Field(
        default=None, ge=MIN_SCORE, le=MAX_SCORE, description="rating 1–5 (an integer)"
    )
    thumbs: Literal["up", "down"] | None = Field(
        default=None,
        description=f"thumbs up stores score {POSITIVE_SCORE}, thumbs down score {NEGATIVE_SCORE}",
    )
    rating: Rating | None = Field(
        default=None,
        description="the same in words: 'positive' is thumbs up, 'negative' thumbs down",
    )
    text: _Text | None = Field(default=None, description="free-form comment")

    @field_validator("score", mode="before")  # before: no lax coercion of True, 3.0, "4"
    @classmethod
    def _score(cls, value: object) -> int | None:
        return check_score(value)

    @model_validator(mode="after")
    def _one_rating(self) -> _RatingRequest:
        if self.score is not None and self.thumbs is not None:
            raise InvalidFeedbackError("give score or thumbs, not both")
        if self.score is not None and self.rating is not None:
            raise InvalidFeedbackError("give score or rating, not both")
        thumbs, rating = self.thumbs, self.rating
        if thumbs is not None and rating is not None and _THUMBS_RATING[thumbs] != rating:
            raise InvalidFeedbackError(f"thumbs {thumbs!r} and rating {rating!r} disagree")
        check_feedback(self.text, self.effective_score, self._correction())
        return self

    def _correction(self) -> str | None:
        return None

    @property
    def effective_score(self) -> int | None:
        """The score to store: ``score``, or what the thumbs or the rating stand for."""
        if self.thumbs is not None:
            return POSITIVE_SCORE if self.thumbs == "up" else NEGATIVE_SCORE
        if self.rating is not None:
            return _RATING_SCORE[self.rating]
        return self.score


class FeedbackRequest(_RatingRequest):
    """Feedback on one turn: a score, thumbs *or* a rating, and/or a comment and a
    correction.

    Only the fields given change; at least one must carry something.
    """

    correction: _Text | None = Field(default=None, description="the right answer, if it was wrong")

    def _correction(self) -> str | None:
        return self.correction


class SessionFeedbackRequest(_RatingRequest):
    """Feedback on a whole conversation: a score, thumbs *or* a rating, and/or a comment.

    Only the fields given change; at least one must carry something.
    """


class Turn(SessionQAEntry):
    """A turn as the REST API serves it: every field, ``memory_ids`` ``[]`` when none."""

    memory_ids: list[str] = Field(
        description="the qa_ids of the remembered turns handed to the model for this turn"
    )


FeedbackAnswer: type[BaseModel] = create_model(
    "FeedbackAnswer",
    __doc__="A turn as a feedback request left it, and what that means for memory.",
    # every field of a turn, then two more (a subclass cannot: the entry's
    # ``remembered`` is a property)
    **{name: (field.annotation, field) for name, field in Turn.model_fields.items()},  # type: ignore[call-overload]
    remembered=(
        bool,
        Field(
            description="positive memory hands this turn back now (a score >= "
            f"{POSITIVE_MIN_SCORE} or a correction, and it does not hurt)"
        ),
    ),
    recorded_at=(
        datetime | None,
        Field(description="when this feedback was recorded (the turn's feedback_time)"),
    ),
)


class SessionRating(BaseModel):
    """A whole conversation's rating, and how much of it is in positive memory."""

    session_id: str
    rating: Rating | None = Field(
        description=f"'positive' (score >= {POSITIVE_MIN_SCORE}), 'negative' (score <= "
        f"{NEGATIVE_MAX_SCORE}) or null (no score, or one in between)"
    )
    feedback_score: int | None = Field(description="the conversation's score 1–5, if any")
    feedback_text: str | None = Field(description="the comment on the conversation, if any")
    recorded_at: datetime | None = Field(
        description="when the rating was recorded; null when the conversation has none"
    )
    remembered: bool = Field(
        description="at least one of the session's turns is in positive memory (a "
        "conversation's rating alone puts nothing there: rate its answers for that)"
    )
    remembered_turns: int = Field(description="how many of its turns are in positive memory")


def session_rating(session_id: str, entries: list[SessionQAEntry]) -> SessionRating:
    """The answer about a session's rating, from all its turns (oldest first)."""
    found = first_rating(entries)
    remembered = sum(1 for e in entries if e.remembered)
    return SessionRating(
        session_id=session_id,
        rating=rating_of(found.feedback_score) if found else None,
        feedback_score=found.feedback_score if found else None,
        feedback_text=found.feedback_text if found else None,
        recorded_at=found.feedback_time if found else None,
        remembered=remembered > 0,
        remembered_turns=remembered,
    )


def first_rating(entries: list[SessionQAEntry]) -> SessionFeedback | None:
    """The conversation's rating, kept on its first turn."""
    return next((e.session_feedback for e in entries if e.session_feedback), None)


def rating_of(score: int | None) -> Rating | None:
    """``"positive"``, ``"negative"`` or ``None``, by :mod:`feedback_plugin.ratings`."""
    if is_positive(score):
        return "positive"
    if is_negative(score):
        return "negative"
    return None


class MemoryRef(BaseModel):
    """A remembered turn and the session it lives in (as ``GET /api/memory`` names it)."""

    model_config = ConfigDict(extra="forbid")

    qa_id: _Id
    session_id: _Id

    @field_validator("qa_id", "session_id")
    @classmethod
    def _id(cls, value: str, info: ValidationInfo) -> str:
        return check_id(value, f"memory {info.field_name}")


class TurnRequest(BaseModel):
    """A turn to record: the question, the answer and what the answer was made from.

    The user is the API key's; the turn's id is new (the answer tells it). The
    checks are the store's own (:meth:`SessionStore.record`), as validators: pydantic
    string constraints would refuse text UTF-8 cannot carry, which the store keeps.
    """

    model_config = ConfigDict(extra="forbid")

    session_id: _Id = Field(description="the session (any non-empty string)")
    question: _Text = Field(description="what the user asked")
    answer: _Text = Field(description="what the model answered")
    context: list[_Text] = Field(
        default_factory=list, description="the documents the answer was made from"
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="anything to keep with the turn (JSON)"
    )
    memory_ids: list[_Id | MemoryRef] = Field(
        default_factory=list,
        max_length=MAX_MEMORY_IDS,
        description="the remembered turns handed to the model for this answer: qa_ids, or "
        "{qa_id, session_id} as GET /api/memory names them; rating this turn down "
        "charges them",
    )

    @field_validator("session_id")
    @classmethod
    def _session_id(cls, value: str) -> str:
        return check_id(value)

    @field_validator("question", "answer")
    @classmethod
    def _text(cls, value: str, info: ValidationInfo) -> str:
        return check_text(value, str(info.field_name))

    @field_validator("context")
    @classmethod
    def _context(cls, value: list[str]) -> list[str]:
        return [check_text(doc, "context") for doc in value]

    @field_validator("memory_ids")
    @classmethod
    def _memory_ids(cls, value: list[str | MemoryRef]) -> list[str | MemoryRef]:
        for ref in value:
            if isinstance(ref, str):
                check_id(ref, "memory id")
        return value

    def memory_refs(self) -> list[str | tuple[str, str]]:
        """``memory_ids`` as :meth:`SessionStore.record` takes them."""
        return [r if isinstance(r, str) else (r.session_id, r.qa_id) for r in self.memory_ids]


class WordsRequest(BaseModel):
    """Feedback in the user's own words, for a chat model to turn into a rating."""

    model_config = ConfigDict(extra="forbid")

    feedback_content: _Text = Field(
        description="what the user said about the answers ('No, it's Canberra.')"
    )
    corrected_answer: StrictBool = Field(
        default=False,
        description="also ask the model for the answer rewritten to follow the feedback",
    )
    background: StrictBool = Field(
        default=False,
        description="answer 202 at once with a task to read at GET /api/feedback-tasks/{task_id}",
    )

    @field_validator("feedback_content")
    @classmethod
    def _content(cls, value: str) -> str:
        if not check_text(value, "feedback_content").strip():
            raise InvalidFeedbackError("feedback_content must not be blank")
        return value


class SessionSummary(BaseModel):
    """One session of the caller and how its turns were rated."""

    session_id: str
    turns: int = Field(description="number of turns")
    positive: int = Field(description=f"turns with score >= {POSITIVE_MIN_SCORE}")
    negative: int = Field(description=f"turns with score <= {NEGATIVE_MAX_SCORE}")
    unrated: int = Field(description="turns without a score")
    last_time: datetime | None = Field(description="when the newest turn was recorded")
    session_feedback: SessionFeedback | None = Field(
        description="the conversation's own rating (score, comment, time), if it has one"
    )


class Ratings(BaseModel):
    """The score scale and what counts as positive and negative (``feedback_plugin.ratings``)."""

    min_score: int = Field(description="the lowest score")
    max_score: int = Field(description="the highest score")
    positive_score: int = Field(description="what thumbs up stores")
    negative_score: int = Field(description="what thumbs down stores")
    positive_min_score: int = Field(description="a score at least this is positive (liked)")
    negative_max_score: int = Field(description="a score at most this is negative")


class MemoryHit(BaseModel):
    """A remembered (positively rated or corrected) turn, its relevance to the query, and
    how it was found."""

    qa_id: str
    session_id: str
    question: str
    answer: str = Field(description="the corrected answer when one was given, else the answer")
    feedback_score: int | None
    relevance: float = Field(
        description="higher is closer: by words and meaning the fused score (0..1, 1 for "
        "first by words and by meaning), by words alone the BM25 relevance"
    )
    search: Search = Field(
        description="how the query was searched: 'words+meaning' (words and an embedding "
        "model, fused) or 'words' (BM25 only); the same for every hit, and in the "
        "X-Memory-Search header"
    )
    found_by: FoundBy = Field(
        description="what found this turn: 'words' (words it shares with the query), "
        "'meaning' (the embedding model alone: it may share no word) or 'words+meaning'"
    )
    similarity: float | None = Field(
        description="its cosine similarity to the query when found by meaning, else null"
    )


FeedbackFilter = Literal["any", "positive", "negative", "unrated"]


def summary(session_id: str, entries: list[SessionQAEntry]) -> SessionSummary:
    scores = [e.feedback_score for e in entries]
    return SessionSummary(
        session_id=session_id,
        turns=len(entries),
        positive=sum(1 for s in scores if is_positive(s)),
        negative=sum(1 for s in scores if is_negative(s)),
        unrated=sum(1 for s in scores if not is_rated(s)),
        last_time=max((e.time for e in entries), default=None),
        session_feedback=first_rating(entries),
    )


KEEP: dict[str, Callable[[SessionSummary], bool]] = {
    "any": lambda s: True,
    "positive": lambda s: s.positive > 0,
    "negative": lambda s: s.negative > 0,
    "unrated": lambda s: s.unrated > 0,
}
