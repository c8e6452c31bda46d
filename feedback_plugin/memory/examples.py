"""PositiveExampleSelector: liked turns as few-shot examples."""

from __future__ import annotations

import logging
from typing import Any

from langchain_core.example_selectors import BaseExampleSelector
from pydantic import BaseModel, ConfigDict, field_validator

from ..errors import StoreError
from ..models import SessionQAEntry, check_score
from ..ratings import POSITIVE_MIN_SCORE, POSITIVE_SCORE
from .retriever import asearch_memory, search_memory

log = logging.getLogger("feedback_plugin")

__all__ = ["PositiveExampleSelector"]


class PositiveExampleSelector(BaseExampleSelector, BaseModel):
    """Pick the ``k`` liked turns most relevant to the input as few-shot examples.

    Each example is ``{"question": ..., "answer": ...}`` (the corrected answer
    where there is one), ready for a ``FewShotChatMessagePromptTemplate``
    whose example prompt uses ``{question}`` and ``{answer}``.

    ``input_key`` names the input variable holding the query; by default all
    string inputs are joined.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Any
    k: int = 2
    user: str | None = None
    session_id: str | None = None
    min_score: int = POSITIVE_MIN_SCORE
    input_key: str | None = None
    question_key: str = "question"
    answer_key: str = "answer"
    examples_session: str = "few-shot-examples"
    """Session that :meth:`add_example` records hand-written examples in."""

    @field_validator("min_score", mode="before")  # before: no lax coercion of True, 4.0, "4"
    @classmethod
    def _score(cls, value: int) -> int:
        checked = check_score(value)
        assert checked is not None
        return checked

    def _query(self, input_variables: dict[str, Any]) -> str:
        if self.input_key is not None:
            return str(input_variables.get(self.input_key, ""))
        return " ".join(v for v in input_variables.values() if isinstance(v, str))

    def select_examples(self, input_variables: dict[str, Any]) -> list[dict[str, Any]]:
        """The liked turns most like the input; none (logged) if memory cannot be read."""
        try:
            found = search_memory(self.store, self._query(input_variables), **self._options())
        except StoreError as exc:
            return _none(exc)
        return self._examples(found)

    async def aselect_examples(self, input_variables: dict[str, Any]) -> list[dict[str, Any]]:
        """:meth:`select_examples`, awaited (memory read off the event loop)."""
        try:
            found = await asearch_memory(
                self.store, self._query(input_variables), **self._options()
            )
        except StoreError as exc:
            return _none(exc)
        return self._examples(found)

    def _options(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "user": self.user,
            "session_id": self.session_id,
            "min_score": self.min_score,
        }

    def _examples(self, found: list[tuple[SessionQAEntry, float]]) -> list[dict[str, Any]]:
        return [
            {self.question_key: entry.question, self.answer_key: entry.best_answer}
            for entry, _ in found
        ]

    def add_example(self, example: dict[str, str]) -> Any:
        """Record a hand-written example as a liked turn; return its ``qa_id``."""
        entry = self.store.record(
            self.examples_session,
            example[self.question_key],
            example[self.answer_key],
            user=self.user,
            wait=True,
        )
        self.store.add_feedback(
            self.examples_session, entry.qa_id, feedback_score=POSITIVE_SCORE, user=self.user
        )
        return entry.qa_id


def _none(exc: StoreError) -> list[dict[str, Any]]:
    log.error("feedback_plugin: memory unavailable; no examples selected", exc_info=exc)
    return []
