"""What the handler reads out of LangChain payloads: question, answer, session, user, metadata."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, Generation, LLMResult
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate

from feedback_plugin.capture.extract import (
    SESSION_KEYS,
    answer_from,
    json_safe,
    question_from,
    session_id_from,
    user_from,
)

HISTORY = [
    SystemMessage("You are helpful."),
    HumanMessage("first question"),
    AIMessage("first answer"),
    HumanMessage("second question"),
    AIMessage("second answer"),
]

# -- question_from ------------------------------------------------------------


def test_question_from_string() -> None:
    assert question_from("How do I reset my password?") == "How do I reset my password?"
    assert question_from("") == ""


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"question": "Q", "input": "I", "query": "R"}, "Q"),
        ({"query": "R", "input": "I"}, "I"),
        ({"context": "ignored", "query": "R"}, "R"),
        ({"history": [], "question": "Why?", "lang": "en"}, "Why?"),
    ],
)
def test_question_from_dict_prefers_question_then_input_then_query(
    inputs: dict[str, Any], expected: str
) -> None:
    assert question_from(inputs) == expected


def test_question_from_dict_without_known_key_takes_first_string_value() -> None:
    assert question_from({"k": 3, "topic": "billing", "other": "x"}) == "billing"


def test_question_from_dict_with_messages_under_a_key() -> None:
    assert question_from({"messages": HISTORY}) == "second question"
    assert question_from({"input": HISTORY}) == "second question"
    assert question_from({"question": HumanMessage("as a message")}) == "as a message"


def test_question_from_message_list_takes_last_human_message() -> None:
    assert question_from(HISTORY) == "second question"
    assert question_from(HISTORY[:3]) == "first question"


def test_question_from_chat_model_start_payload_list_of_lists() -> None:
    # on_chat_model_start passes one message list per prompt
    assert question_from([HISTORY]) == "second question"


def test_question_from_tuple_and_dict_messages() -> None:
    assert question_from([("system", "sys"), ("human", "hi"), ("ai", "hello")]) == "hi"
    assert question_from([("user", "from user")]) == "from user"
    assert (
        question_from(
            [{"role": "user", "content": "dict msg"}, {"role": "assistant", "content": "x"}]
        )
        == "dict msg"
    )


def test_question_from_single_message_and_content_blocks() -> None:
    assert question_from(HumanMessage("plain")) == "plain"
    blocks = HumanMessage(content=[{"type": "text", "text": "block text"}])
    assert question_from(blocks) == "block text"


def test_question_from_prompt_values() -> None:
    chat = ChatPromptTemplate.from_messages([("system", "be brief"), ("human", "{q}")])
    assert question_from(chat.invoke({"q": "from a chat prompt"})) == "from a chat prompt"
    plain = PromptTemplate.from_template("Say {q}").invoke({"q": "hi"})
    assert question_from(plain) == "Say hi"


def test_question_from_unrecognised_input_is_still_a_string() -> None:
    out = question_from({"n": 1, "m": [1, 2]})
    assert isinstance(out, str)
    assert json.loads(out) == {"n": 1, "m": [1, 2]}
    assert question_from(42) == "42"


# -- answer_from --------------------------------------------------------------


def test_answer_from_string_and_messages() -> None:
    assert answer_from("Because.") == "Because."
    assert answer_from(AIMessage("from a message")) == "from a message"
    assert answer_from(AIMessageChunk(content="chunk")) == "chunk"
    assert answer_from(AIMessage(content=[{"type": "text", "text": "blocks"}])) == "blocks"


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ({"answer": "A", "output": "O", "result": "R", "text": "T"}, "A"),
        ({"text": "T", "output": "O"}, "O"),
        ({"text": "T", "result": "R"}, "R"),
        ({"docs": ["d"], "text": "T"}, "T"),
        ({"answer": AIMessage("in a message"), "context": ["doc"]}, "in a message"),
        ({"only": "single value"}, "single value"),
    ],
)
def test_answer_from_dict(outputs: dict[str, Any], expected: str) -> None:
    assert answer_from(outputs) == expected


def test_answer_from_llm_result() -> None:
    chat = LLMResult(generations=[[ChatGeneration(message=AIMessage("chat gen"))]])
    assert answer_from(chat) == "chat gen"
    text = LLMResult(generations=[[Generation(text="text gen"), Generation(text="second")]])
    assert answer_from(text) == "text gen"
    assert answer_from(LLMResult(generations=[])) == ""
    assert answer_from(LLMResult(generations=[[]])) == ""


def test_none_is_an_empty_text_not_the_json_literal() -> None:
    # an abandoned stream ends its root run with outputs=None
    assert answer_from(None) == ""
    assert question_from(None) == ""
    assert answer_from({"answer": None}) == ""


def test_answer_from_unrecognised_output_is_still_a_string() -> None:
    out = answer_from({"a": 1, "b": 2})
    assert isinstance(out, str)
    assert json.loads(out) == {"a": 1, "b": 2}


# -- session_id_from / user_from ----------------------------------------------


def test_session_keys_order_is_the_contract() -> None:
    assert SESSION_KEYS == ("session_id", "thread_id", "conversation_id", "langfuse_session_id")


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (
            {
                "langfuse_session_id": "l",
                "conversation_id": "c",
                "thread_id": "t",
                "session_id": "s",
            },
            "s",
        ),
        ({"langfuse_session_id": "l", "conversation_id": "c", "thread_id": "t"}, "t"),
        ({"langfuse_session_id": "l", "conversation_id": "c"}, "c"),
        ({"langfuse_session_id": "l"}, "l"),
        ({"other": "x"}, "default"),
        ({}, "default"),
        (None, "default"),
    ],
)
def test_session_id_from_order(metadata: dict[str, Any] | None, expected: str) -> None:
    assert session_id_from(metadata, "default") == expected


def test_session_id_from_skips_unusable_values() -> None:
    assert session_id_from({"session_id": "", "thread_id": "t"}, None) == "t"
    assert session_id_from({"session_id": None, "thread_id": "t"}, None) == "t"
    assert session_id_from({"session_id": True}, "d") == "d"
    assert session_id_from({"session_id": {"x": 1}}, "d") == "d"
    assert session_id_from({"thread_id": 42}, None) == "42"
    assert session_id_from({}, None) is None


def test_user_from() -> None:
    assert user_from({"user_id": "alice"}, "bob") == "alice"
    assert user_from({"user_id": 7}, None) == "7"
    assert user_from({"user_id": ""}, "bob") == "bob"
    assert user_from({}, "bob") == "bob"
    assert user_from(None, None) is None


# -- json_safe ----------------------------------------------------------------


def test_json_safe_keeps_json_values_and_tags() -> None:
    metadata = {
        "model": "m1",
        "prompt_version": 2,
        "temperature": 0.5,
        "streaming": False,
        "none": None,
        "nested": {"a": [1, "two", {"b": None}]},
        "tuple": (1, 2),
    }
    out = json_safe(metadata, ["rag", "v2"])
    assert out == {
        "model": "m1",
        "prompt_version": 2,
        "temperature": 0.5,
        "streaming": False,
        "none": None,
        "nested": {"a": [1, "two", {"b": None}]},
        "tuple": (1, 2),
        "tags": ("rag", "v2"),
    }
    assert json.loads(json.dumps(out, allow_nan=False))["tuple"] == [1, 2]


def test_json_safe_drops_non_json_values() -> None:
    metadata = {
        "keep": "yes",
        "client": object(),
        "nan": math.nan,
        "inf": math.inf,
        "bytes": b"raw",
        "set": {1, 2},
        "deep_bad": {"ok": 1, "bad": object()},
        "list_bad": [1, object()],
        "non_str_key": {1: "x"},
    }
    out = json_safe(metadata)
    assert out == {"keep": "yes"}
    json.dumps(out, allow_nan=False)


def test_json_safe_without_tags_and_without_mutating_input() -> None:
    metadata = {"a": 1, "bad": object()}
    assert json_safe(metadata) == {"a": 1}
    assert json_safe(metadata, []) == {"a": 1}
    assert "bad" in metadata
    assert json_safe(None) == {}
    assert json_safe(None, ["t"]) == {"tags": ("t",)}


def test_json_safe_refuses_pathologically_deep_values() -> None:
    deep: Any = "leaf"
    for _ in range(50):
        deep = [deep]
    assert json_safe({"deep": deep, "ok": 1}) == {"ok": 1}
