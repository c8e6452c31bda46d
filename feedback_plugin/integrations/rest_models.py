"""The REST API's request and response bodies (their OpenAPI schemas), and the
session summary the session list answers with."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ..errors import InvalidFeedbackError
from ..models import (
    MAX_SCORE,
    MAX_TEXT_LENGTH,
    MIN_SCORE,
    SessionQAEntry,
    check_feedback,
    check_score,
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
    "ErrorResponse",
    "FeedbackFilter",
    "FeedbackRequest",
    "MemoryHit",
    "Ratings",
    "SessionSummary",
    "summary",
]


class ErrorResponse(BaseModel):
    """Every error except a 422: ``{"detail": "what went wrong"}``."""

    detail: str


_Text = Annotated[str, WithJsonSchema({"type": "string", "maxLength": MAX_TEXT_LENGTH})]
"""A text field. Its length is checked by ``check_feedback`` (the store's own rule),
not by pydantic: a length constraint makes pydantic refuse lone surrogates."""


class FeedbackRequest(BaseModel):
    """Feedback on one turn: a score *or* thumbs, and/or a comment and a correction.

    Only the fields given change; at least one must carry something.
    """

    model_config = ConfigDict(extra="forbid")

    score: int | None = Field(
        default=None, ge=MIN_SCORE, le=MAX_SCORE, description="rating 1–5 (an integer)"
    )
    thumbs: Literal["up", "down"] | None = Field(
        default=None, description="thumbs up stores score 5, thumbs down score 1"
    )
    text: _Text | None = Field(default=None, description="free-form comment")
    correction: _Text | None = Field(default=None, description="the right answer, if it was wrong")

    @field_validator("score", mode="before")  # before: no lax coercion of True, 3.0, "4"
    @classmethod
    def _score(cls, value: object) -> int | None:
        return check_score(value)

    @model_validator(mode="after")
    def _one_rating(self) -> FeedbackRequest:
        if self.score is not None and self.thumbs is not None:
            raise InvalidFeedbackError("give score or thumbs, not both")
        check_feedback(self.text, self.effective_score, self.correction)
        return self

    @property
    def effective_score(self) -> int | None:
        """The score to store: ``score``, or what the thumbs stand for."""
        if self.thumbs is not None:
            return POSITIVE_SCORE if self.thumbs == "up" else NEGATIVE_SCORE
        return self.score


class SessionSummary(BaseModel):
    """One session of the caller and how its turns were rated."""

    session_id: str
    turns: int = Field(description="number of turns")
    positive: int = Field(description=f"turns with score >= {POSITIVE_MIN_SCORE}")
    negative: int = Field(description=f"turns with score <= {NEGATIVE_MAX_SCORE}")
    unrated: int = Field(description="turns without a score")
    last_time: datetime | None = Field(description="when the newest turn was recorded")


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
    )


KEEP: dict[str, Callable[[SessionSummary], bool]] = {
    "any": lambda s: True,
    "positive": lambda s: s.positive > 0,
    "negative": lambda s: s.negative > 0,
    "unrated": lambda s: s.unrated > 0,
}
