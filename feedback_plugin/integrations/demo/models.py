"""The demo chat's request and response bodies (pydantic models, no routes)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from ...errors import InvalidArgumentError, InvalidIdError
from ...models import MAX_ID_LENGTH
from ..explained_memory import FoundBy
from ..offline_model import OFFLINE_RESPONDER
from ..rest_models import Ratings

__all__ = [
    "MAX_QUESTION",
    "ChatRequest",
    "ChatResponse",
    "ChatTurn",
    "ContextDoc",
    "Info",
    "Memory",
    "MemorySearchInfo",
    "PastMemory",
]

MAX_QUESTION = 4000
"""The longest chat question, in characters (the page's input allows as many)."""


class ChatRequest(BaseModel):
    """One question in a session.

    The checks are validators rather than pydantic string constraints, which
    refuse text UTF-8 cannot carry (lone surrogates): such text is accepted
    and stored escaped, like everywhere else.
    """

    model_config = ConfigDict(extra="forbid")

    session_id: Annotated[
        str, WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH})
    ] = Field(description="the chat session (any non-empty string)")
    question: Annotated[
        str, WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_QUESTION})
    ] = Field(description="what the user asked (surrounding whitespace is dropped)")

    @field_validator("session_id")
    @classmethod
    def _session_id(cls, value: str) -> str:
        if not value or len(value) > MAX_ID_LENGTH:
            raise InvalidIdError(f"session_id must have 1 to {MAX_ID_LENGTH} characters")
        return value

    @field_validator("question")
    @classmethod
    def _question(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > MAX_QUESTION:
            raise InvalidArgumentError(
                f"question must have 1 to {MAX_QUESTION} characters besides spaces"
            )
        return value


class ContextDoc(BaseModel):
    """A help-centre article the answer was based on."""

    id: str
    title: str
    text: str


_FOUND_BY = (
    "how memory found it: 'words' (words it shares with the question), 'meaning' (by "
    "meaning alone: an embedding model; it may share no word) or 'words+meaning'"
)
_SIMILARITY = "its cosine similarity to the question (0..1), when found by meaning"


class Memory(BaseModel):
    """A liked (or corrected) earlier turn the model was shown.

    ``session_id``, ``feedback_score`` and ``relevance`` are ``None`` when that
    turn left memory between the model's call and this answer.
    """

    qa_id: str
    session_id: str | None
    question: str
    answer: str = Field(description="the corrected answer when one was given, else the answer")
    feedback_score: int | None
    relevance: float | None = Field(
        description="how well it matched the question (higher is closer)"
    )
    found_by: FoundBy = Field(default="words", description=_FOUND_BY)
    similarity: float | None = Field(default=None, description=_SIMILARITY)


class ChatResponse(BaseModel):
    """The answer, the id to rate it by, and what it was built from."""

    qa_id: str = Field(
        description="the recorded turn's id (rate it with PUT /api/turns/{qa_id}/feedback)"
    )
    session_id: str
    question: str
    answer: str
    responder: str = Field(description=f"the chat model's name, or {OFFLINE_RESPONDER!r}")
    offline: bool = Field(description="true when the built-in offline responder answered")
    recorded: bool = Field(description="whether the turn is in the store (so it can be rated)")
    context: list[ContextDoc]
    memories: list[Memory]


class PastMemory(BaseModel):
    """A memory an earlier answer used, rebuilt from the turn's recorded context.

    ``qa_id``, ``session_id`` and ``feedback_score`` (the remembered turn's
    rating now) are ``None`` when that turn is no longer in the caller's memory.
    """

    qa_id: str | None
    session_id: str | None
    question: str
    answer: str
    feedback_score: int | None
    found_by: FoundBy = Field(default="words", description=_FOUND_BY)
    similarity: float | None = Field(default=None, description=_SIMILARITY)


class ChatTurn(BaseModel):
    """A recorded turn as the page shows it: what ``POST /api/chat`` said, and its rating."""

    qa_id: str
    session_id: str
    question: str
    answer: str
    responder: str | None
    offline: bool
    recorded: bool = True
    context: list[ContextDoc]
    memories: list[PastMemory]
    feedback_score: int | None
    feedback_text: str | None
    correction: str | None


class MemorySearchInfo(BaseModel):
    """How the memories shown to the model are found."""

    mode: Literal["meaning", "words"] = Field(
        description="'meaning': by words and by meaning (an embedding model), fused; "
        "'words': by words only (BM25)"
    )
    model: str | None = Field(description="the embedding model's name (null by words)")
    local: bool = Field(description="whether the embedding model runs on the server itself")
    label: str = Field(description="what the page shows, e.g. 'memory found by words (BM25)'")
    note: str | None = Field(
        default=None, description="why memory is searched by words only, if it could be otherwise"
    )


class Info(BaseModel):
    responder: str
    offline: bool
    note: str | None = Field(description="why a configured chat model is not used, if it is not")
    auth: bool = Field(description="whether the API wants `Authorization: Bearer <key>`")
    suggestions: list[str]
    ratings: Ratings = Field(description="the score scale and thresholds the page shows")
    memory_search: MemorySearchInfo = Field(description="how liked turns are found")
