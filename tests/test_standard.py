"""langchain-tests standard suites for the retriever and each of the three tools, offline.

The suites read their subjects from properties, which cannot take fixtures:
an autouse fixture builds a fresh pre-filled store in ``tmp_path`` and keeps
it on the test instance (pytest makes one instance per test).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import BaseTool
from langchain_tests.integration_tests import RetrieversIntegrationTests, ToolsIntegrationTests
from langchain_tests.unit_tests import ToolsUnitTests

from feedback_plugin import FeedbackToolkit, PositiveMemoryRetriever, SessionStore

LIKED = [
    ("How do I reset my password?", "Settings > Security > Reset password."),
    ("I forgot my password, what now?", "Use the 'forgot password' link."),
    ("Can I reset my password from the app?", "Yes: Profile > Password."),
    ("How often must I change my password?", "Every 90 days."),
]
DISLIKED = ("Password reset does not work", "Buy a new computer.")
SESSION, QA_ID = "s1", "qa-1"


def filled_store(directory: Path) -> SessionStore:
    store = SessionStore(directory)
    for i, (q, a) in enumerate(LIKED):
        e = store.record(f"liked-{i}", q, a, wait=True)
        assert store.thumbs(f"liked-{i}", e.qa_id, up=True)
    e = store.record("disliked", *DISLIKED, wait=True)
    assert store.thumbs("disliked", e.qa_id, up=False)
    store.record(SESSION, "What is the capital of France?", "Paris.", qa_id=QA_ID, wait=True)
    return store


class TestRetrieverStandard(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _store(self, tmp_path: Path) -> Iterator[None]:
        self.store = filled_store(tmp_path / "store")
        yield
        self.store.close()

    @property
    def retriever_constructor(self) -> type[PositiveMemoryRetriever]:
        return PositiveMemoryRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"store": self.store}

    @property
    def retriever_query_example(self) -> str:
        return "reset my password"

    def test_standard_query_returns_liked_turns_only(self) -> None:
        docs = PositiveMemoryRetriever(store=self.store, k=10).invoke(self.retriever_query_example)
        assert sorted(d.metadata["answer"] for d in docs) == sorted(a for _, a in LIKED)


class _ToolFromToolkit:
    """One tool of a FeedbackToolkit over a pre-filled store, as an instance."""

    tool_name: str

    @pytest.fixture(autouse=True)
    def _store(self, tmp_path: Path) -> Iterator[None]:
        self.store = filled_store(tmp_path / "store")
        tools = FeedbackToolkit(store=self.store, session_id=SESSION).get_tools()
        self._tool = next(t for t in tools if t.name == self.tool_name)
        yield
        self.store.close()

    @property
    def tool_constructor(self) -> BaseTool:
        return self._tool


class _AddFeedback(_ToolFromToolkit):
    tool_name = "add_feedback"

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"qa_id": QA_ID, "feedback_score": 5, "feedback_text": "spot on"}


class _ClearFeedback(_ToolFromToolkit):
    tool_name = "clear_feedback"

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"qa_id": QA_ID, "session_id": SESSION}


class _SearchPositiveMemory(_ToolFromToolkit):
    tool_name = "search_positive_memory"

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"query": "reset my password"}


class TestAddFeedbackUnit(_AddFeedback, ToolsUnitTests):
    pass


class TestAddFeedbackIntegration(_AddFeedback, ToolsIntegrationTests):
    def test_example_call_rates_the_turn(self) -> None:
        result = self._tool.invoke(self.tool_invoke_params_example)
        assert not result.startswith("Error")
        entry = self.store.get_entry(SESSION, QA_ID)
        assert entry is not None
        assert (entry.feedback_score, entry.feedback_text) == (5, "spot on")


class TestClearFeedbackUnit(_ClearFeedback, ToolsUnitTests):
    pass


class TestClearFeedbackIntegration(_ClearFeedback, ToolsIntegrationTests):
    def test_example_call_clears_the_rating(self) -> None:
        assert self.store.add_feedback(SESSION, QA_ID, "ok", 4)
        result = self._tool.invoke(self.tool_invoke_params_example)
        assert not result.startswith("Error")
        entry = self.store.get_entry(SESSION, QA_ID)
        assert entry is not None
        assert (entry.feedback_score, entry.feedback_text) == (None, None)


class TestSearchPositiveMemoryUnit(_SearchPositiveMemory, ToolsUnitTests):
    pass


class TestSearchPositiveMemoryIntegration(_SearchPositiveMemory, ToolsIntegrationTests):
    def test_example_call_finds_liked_turns_only(self) -> None:
        result = self._tool.invoke(self.tool_invoke_params_example)
        assert LIKED[0][1] in result
        assert DISLIKED[1] not in result
