"""FeedbackToolkit's three tools and the PositiveExampleSelector."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate, FewShotChatMessagePromptTemplate
from langchain_core.tools import BaseTool

from feedback_plugin import FeedbackToolkit, SessionStore
from feedback_plugin.memory import PositiveExampleSelector

PASSWORD_Q, PASSWORD_A = "How do I reset my password?", "Settings > Security > Reset."
FRANCE_Q, FRANCE_A = "What is the capital of France?", "Paris."


def record(store: SessionStore, session_id: str, q: str, a: str, user: str | None = None) -> str:
    return store.record(session_id, q, a, user=user, wait=True).qa_id


def tools(store: SessionStore, **kw: Any) -> dict[str, BaseTool]:
    return {t.name: t for t in FeedbackToolkit(store=store, **kw).get_tools()}


def state(store: SessionStore, session_id: str, qa_id: str, user: str | None = None) -> dict:
    entry = store.get_entry(session_id, qa_id, user=user)
    assert entry is not None
    return entry.model_dump()


def test_toolkit_returns_exactly_the_three_tools(store: SessionStore) -> None:
    got = FeedbackToolkit(store=store).get_tools()
    assert [t.name for t in got] == ["add_feedback", "clear_feedback", "search_positive_memory"]
    assert all(isinstance(t, BaseTool) for t in got)
    assert all(t.description for t in got)


def test_tool_argument_schemas(store: SessionStore) -> None:
    t = tools(store)
    add = t["add_feedback"].tool_call_schema.model_json_schema()["properties"]
    assert {"qa_id", "feedback_score", "feedback_text", "session_id"} <= set(add)
    clear = t["clear_feedback"].tool_call_schema.model_json_schema()["properties"]
    assert {"qa_id", "session_id"} <= set(clear)
    search = t["search_positive_memory"].tool_call_schema.model_json_schema()
    assert set(search["properties"]) == {"query"}
    assert search["required"] == ["query"]


def test_toolkit_rejects_a_non_store() -> None:
    with pytest.raises((TypeError, ValueError)):
        FeedbackToolkit(store="not a store")


@pytest.mark.parametrize("bad", [True, 0, 6, 4.0, "4"])
def test_toolkit_rejects_a_bad_min_score(store: SessionStore, bad: Any) -> None:
    with pytest.raises(ValueError):
        FeedbackToolkit(store=store, min_score=bad)


# -- add_feedback: errors change nothing -------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        {"feedback_score": 9},
        {"feedback_score": 0},
        {"feedback_score": -1},
        {"feedback_score": True},
        {"feedback_score": False},
        {"feedback_score": "5"},
        {"feedback_score": 4.0},
        {"feedback_score": 3.5},
        {"feedback_score": None},
        {},
        {"feedback_text": "   "},
        {"feedback_text": 5},
        {"qa_id": "no-such-turn", "feedback_score": 5},
        {"qa_id": "", "feedback_score": 5},
        {"session_id": "other-session", "feedback_score": 5},
    ],
)
def test_add_feedback_bad_arguments_return_an_error_and_change_nothing(
    store: SessionStore, args: dict[str, Any]
) -> None:
    qa = record(store, "s1", PASSWORD_Q, PASSWORD_A)
    assert store.add_feedback("s1", qa, "fine", 4)
    before = state(store, "s1", qa)
    add = tools(store, session_id="s1")["add_feedback"]
    result = add.invoke({"qa_id": qa, **args})
    assert isinstance(result, str)
    assert result.startswith("Error:")
    assert state(store, "s1", qa) == before


def test_add_feedback_without_any_session_id_is_an_error(store: SessionStore) -> None:
    qa = record(store, "s1", PASSWORD_Q, PASSWORD_A)
    before = state(store, "s1", qa)
    add = tools(store)["add_feedback"]  # toolkit without a session, call without one
    result = add.invoke({"qa_id": qa, "feedback_score": 5})
    assert result.startswith("Error:")
    assert "session" in result
    assert state(store, "s1", qa) == before


def test_missing_qa_id_is_an_error(store: SessionStore) -> None:
    t = tools(store, session_id="s1")
    assert t["add_feedback"].invoke({"feedback_score": 5}).startswith("Error:")
    assert t["clear_feedback"].invoke({}).startswith("Error:")
    assert t["search_positive_memory"].invoke({}).startswith("Error:")
    assert t["search_positive_memory"].invoke({"query": 5}).startswith("Error:")


# -- add_feedback / clear_feedback: success paths ---------------------------------


def test_add_feedback_changes_the_store(store: SessionStore) -> None:
    qa = record(store, "s1", PASSWORD_Q, PASSWORD_A)
    add = tools(store, session_id="s1")["add_feedback"]
    result = add.invoke({"qa_id": qa, "feedback_score": 5})
    assert not result.startswith("Error")
    assert state(store, "s1", qa)["feedback_score"] == 5

    add.invoke({"qa_id": qa, "feedback_text": "very helpful"})
    after = state(store, "s1", qa)
    assert after["feedback_text"] == "very helpful"
    assert after["feedback_score"] == 5  # a comment keeps the score

    add.invoke({"qa_id": qa, "feedback_score": 2, "feedback_text": "actually wrong"})
    after = state(store, "s1", qa)
    assert (after["feedback_score"], after["feedback_text"]) == (2, "actually wrong")


def test_add_feedback_with_correction(store: SessionStore) -> None:
    qa = record(store, "s1", PASSWORD_Q, "Reinstall the app.")
    t = tools(store, session_id="s1")
    result = t["add_feedback"].invoke({"qa_id": qa, "feedback_score": 1, "correction": PASSWORD_A})
    assert not result.startswith("Error")
    assert state(store, "s1", qa)["correction"] == PASSWORD_A
    found = t["search_positive_memory"].invoke({"query": "reset password"})
    assert PASSWORD_A in found
    assert "Reinstall the app." not in found


def test_session_id_from_toolkit_or_from_the_call(store: SessionStore) -> None:
    in_s1 = record(store, "s1", PASSWORD_Q, PASSWORD_A)
    in_s2 = record(store, "s2", FRANCE_Q, FRANCE_A)
    add = tools(store, session_id="s1")["add_feedback"]

    assert not add.invoke({"qa_id": in_s1, "feedback_score": 5}).startswith("Error")
    assert state(store, "s1", in_s1)["feedback_score"] == 5

    # the toolkit's session does not hold in_s2 ...
    assert add.invoke({"qa_id": in_s2, "feedback_score": 4}).startswith("Error:")
    assert state(store, "s2", in_s2)["feedback_score"] is None
    # ... the call's session_id wins over the toolkit's
    assert not add.invoke({"qa_id": in_s2, "feedback_score": 4, "session_id": "s2"}).startswith(
        "Error"
    )
    assert state(store, "s2", in_s2)["feedback_score"] == 4

    # a toolkit without a session: the call must give it
    add_any = tools(store)["add_feedback"]
    assert not add_any.invoke({"qa_id": in_s2, "feedback_score": 5, "session_id": "s2"}).startswith(
        "Error"
    )
    assert state(store, "s2", in_s2)["feedback_score"] == 5


def test_clear_feedback(store: SessionStore) -> None:
    qa = record(store, "s1", PASSWORD_Q, PASSWORD_A)
    assert store.add_feedback("s1", qa, "great", 5, correction="Better answer.")
    clear = tools(store, session_id="s1")["clear_feedback"]
    result = clear.invoke({"qa_id": qa})
    assert not result.startswith("Error")
    after = state(store, "s1", qa)
    assert (after["feedback_score"], after["feedback_text"], after["correction"]) == (
        None,
        None,
        None,
    )
    assert after["answer"] == PASSWORD_A  # the turn stays


def test_clear_feedback_errors_change_nothing(store: SessionStore) -> None:
    qa = record(store, "s1", PASSWORD_Q, PASSWORD_A)
    assert store.add_feedback("s1", qa, "great", 5)
    before = state(store, "s1", qa)
    assert (
        tools(store, session_id="s1")["clear_feedback"]
        .invoke({"qa_id": "no-such-turn"})
        .startswith("Error:")
    )
    assert (
        tools(store, session_id="s2")["clear_feedback"].invoke({"qa_id": qa}).startswith("Error:")
    )
    assert tools(store)["clear_feedback"].invoke({"qa_id": qa}).startswith("Error:")
    assert state(store, "s1", qa) == before
    # the call's session_id works
    assert (
        not tools(store)["clear_feedback"]
        .invoke({"qa_id": qa, "session_id": "s1"})
        .startswith("Error")
    )
    assert state(store, "s1", qa)["feedback_score"] is None


# -- search_positive_memory --------------------------------------------------------


def test_search_returns_liked_turns_only_and_reflects_changes(store: SessionStore) -> None:
    liked = record(store, "s1", PASSWORD_Q, PASSWORD_A)
    disliked = record(store, "s2", "How do I reset my router?", "Throw it away.")
    record(store, "s3", "How do I reset my phone?", "Hold the power button.")  # unrated
    t = tools(store, session_id="s1")
    search = t["search_positive_memory"]

    assert "Error" not in search.invoke({"query": "reset"})
    assert PASSWORD_A not in search.invoke({"query": "reset"})

    t["add_feedback"].invoke({"qa_id": liked, "feedback_score": 5})
    t["add_feedback"].invoke({"qa_id": disliked, "feedback_score": 1, "session_id": "s2"})
    found = search.invoke({"query": "reset"})
    assert PASSWORD_Q in found and PASSWORD_A in found and liked in found
    assert "Throw it away." not in found
    assert "Hold the power button." not in found

    t["clear_feedback"].invoke({"qa_id": liked})
    assert PASSWORD_A not in search.invoke({"query": "reset"})

    t["add_feedback"].invoke({"qa_id": liked, "feedback_score": 4})
    assert PASSWORD_A in search.invoke({"query": "reset"})
    t["add_feedback"].invoke({"qa_id": liked, "feedback_score": 2})
    assert PASSWORD_A not in search.invoke({"query": "reset"})


def test_search_ranks_the_relevant_turn_first(store: SessionStore) -> None:
    for session_id, q, a in [
        ("s1", PASSWORD_Q, PASSWORD_A),
        ("s2", FRANCE_Q, FRANCE_A),
        ("s3", "Who wrote Hamlet?", "Shakespeare."),
    ]:
        assert store.add_feedback(session_id, record(store, session_id, q, a), None, 5)
    found = tools(store)["search_positive_memory"].invoke({"query": "capital of France"})
    first = found.split("\n2.")[0]
    assert FRANCE_A in first


@pytest.mark.parametrize("query", ["", "?!", "x" * 10_000, "pass\x00word", 'AND OR "* NEAR('])
def test_search_odd_queries_return_a_string(store: SessionStore, query: str) -> None:
    qa = record(store, "s1", PASSWORD_Q, PASSWORD_A)
    store.thumbs("s1", qa, up=False)
    result = tools(store)["search_positive_memory"].invoke({"query": query})
    assert isinstance(result, str)
    assert PASSWORD_A not in result  # a disliked turn never


def test_search_respects_min_score(store: SessionStore) -> None:
    qa = record(store, "s1", PASSWORD_Q, PASSWORD_A)
    assert store.add_feedback("s1", qa, None, 4)
    assert PASSWORD_A in tools(store)["search_positive_memory"].invoke({"query": "password"})
    strict = tools(store, min_score=5)["search_positive_memory"]
    assert PASSWORD_A not in strict.invoke({"query": "password"})


# -- ToolCall dicts, async ------------------------------------------------------------


def test_tools_invoked_through_a_tool_call_return_tool_messages(store: SessionStore) -> None:
    qa = record(store, "s1", PASSWORD_Q, PASSWORD_A)
    t = tools(store, session_id="s1")

    def call(name: str, args: dict[str, Any], call_id: str) -> ToolMessage:
        msg = t[name].invoke({"name": name, "args": args, "id": call_id, "type": "tool_call"})
        assert isinstance(msg, ToolMessage)
        assert msg.tool_call_id == call_id
        assert msg.name == name
        assert isinstance(msg.content, str)
        return msg

    bad = call("add_feedback", {"qa_id": qa, "feedback_score": 9}, "call-0")
    assert bad.content.startswith("Error:")
    assert bad.status == "error"
    assert state(store, "s1", qa)["feedback_score"] is None

    bad_type = call("add_feedback", {"qa_id": qa, "feedback_score": "high"}, "call-1")
    assert bad_type.content.startswith("Error:")

    ok = call("add_feedback", {"qa_id": qa, "feedback_score": 5}, "call-2")
    assert not ok.content.startswith("Error")
    assert ok.status == "success"
    unknown = call("clear_feedback", {"qa_id": "no-such-turn"}, "call-2b")
    assert unknown.content.startswith("Error:") and unknown.status == "error"
    assert state(store, "s1", qa)["feedback_score"] == 5

    found = call("search_positive_memory", {"query": "reset password"}, "call-3")
    assert PASSWORD_A in found.content

    call("clear_feedback", {"qa_id": qa}, "call-4")
    assert state(store, "s1", qa)["feedback_score"] is None
    assert PASSWORD_A not in call("search_positive_memory", {"query": "password"}, "call-5").content


async def test_tools_work_async(store: SessionStore) -> None:
    qa = record(store, "s1", PASSWORD_Q, PASSWORD_A)
    t = tools(store, session_id="s1")
    assert (await t["add_feedback"].ainvoke({"qa_id": qa, "feedback_score": 9})).startswith(
        "Error:"
    )
    await t["add_feedback"].ainvoke({"qa_id": qa, "feedback_score": 5})
    assert state(store, "s1", qa)["feedback_score"] == 5
    assert PASSWORD_A in await t["search_positive_memory"].ainvoke({"query": "password"})
    msg = await t["clear_feedback"].ainvoke(
        {"name": "clear_feedback", "args": {"qa_id": qa}, "id": "c1", "type": "tool_call"}
    )
    assert isinstance(msg, ToolMessage)
    assert state(store, "s1", qa)["feedback_score"] is None


# -- user scoping ----------------------------------------------------------------------


def test_toolkit_is_scoped_to_its_user(store: SessionStore) -> None:
    qa = record(store, "s1", PASSWORD_Q, "alice's answer", user="alice")
    alice = tools(store, session_id="s1", user="alice")
    bob = tools(store, session_id="s1", user="bob")
    anon = tools(store, session_id="s1")

    # nobody else can rate alice's turn
    for other in (bob, anon):
        assert other["add_feedback"].invoke({"qa_id": qa, "feedback_score": 5}).startswith("Error:")
    assert state(store, "s1", qa, user="alice")["feedback_score"] is None

    assert not alice["add_feedback"].invoke({"qa_id": qa, "feedback_score": 5}).startswith("Error")
    assert state(store, "s1", qa, user="alice")["feedback_score"] == 5

    # nobody else sees it, nobody else can clear it
    assert "alice's answer" in alice["search_positive_memory"].invoke({"query": "password"})
    for other in (bob, anon):
        assert "alice's answer" not in other["search_positive_memory"].invoke({"query": "password"})
        assert other["clear_feedback"].invoke({"qa_id": qa}).startswith("Error:")
    assert state(store, "s1", qa, user="alice")["feedback_score"] == 5


# -- PositiveExampleSelector --------------------------------------------------------------


def _few_shot(selector: PositiveExampleSelector) -> ChatPromptTemplate:
    few_shot = FewShotChatMessagePromptTemplate(
        example_selector=selector,
        example_prompt=ChatPromptTemplate.from_messages(
            [("human", "{question}"), ("ai", "{answer}")]
        ),
        input_variables=["input"],
    )
    return ChatPromptTemplate.from_messages(
        [("system", "Answer like the examples."), few_shot, ("human", "{input}")]
    )


def test_example_selector_in_a_few_shot_prompt_picks_the_liked_relevant_turn(
    store: SessionStore,
) -> None:
    liked_pw = record(store, "s1", PASSWORD_Q, PASSWORD_A)
    liked_fr = record(store, "s2", FRANCE_Q, FRANCE_A)
    disliked = record(store, "s3", "How can I reset a password quickly?", "Give up.")
    assert store.thumbs("s1", liked_pw, up=True)
    assert store.thumbs("s2", liked_fr, up=True)
    assert store.thumbs("s3", disliked, up=False)

    prompt = _few_shot(PositiveExampleSelector(store=store, k=1))
    messages = prompt.format_messages(input="I forgot my password, how to reset it?")
    assert [type(m) for m in messages] == [type(messages[0]), HumanMessage, AIMessage, HumanMessage]
    assert messages[1].content == PASSWORD_Q
    assert messages[2].content == PASSWORD_A
    assert messages[3].content == "I forgot my password, how to reset it?"
    texts = " ".join(str(m.content) for m in messages)
    assert "Give up." not in texts

    france = prompt.format_messages(input="capital city of France")
    assert [m.content for m in france[1:3]] == [FRANCE_Q, FRANCE_A]

    # the selector follows feedback at once
    assert store.delete_feedback("s1", liked_pw)
    again = prompt.format_messages(input="I forgot my password, how to reset it?")
    assert PASSWORD_A not in " ".join(str(m.content) for m in again)


def test_example_selector_uses_the_corrected_answer_and_user(store: SessionStore) -> None:
    qa = record(store, "s1", PASSWORD_Q, "Reinstall.", user="alice")
    assert store.add_feedback("s1", qa, None, 5, user="alice", correction=PASSWORD_A)
    mine = PositiveExampleSelector(store=store, user="alice").select_examples(
        {"input": "reset password"}
    )
    assert mine == [{"question": PASSWORD_Q, "answer": PASSWORD_A}]
    assert (
        PositiveExampleSelector(store=store, user="bob").select_examples(
            {"input": "reset password"}
        )
        == []
    )


@pytest.mark.parametrize("bad", [True, 0, 6, 4.0, "4"])
def test_example_selector_rejects_a_bad_min_score(store: SessionStore, bad: Any) -> None:
    # min_score=True must not silently become 1 and hand thumbs-down turns out as examples
    with pytest.raises(ValueError):
        PositiveExampleSelector(store=store, min_score=bad)


def test_example_selector_never_picks_a_disliked_turn(store: SessionStore) -> None:
    qa = record(store, "s1", PASSWORD_Q, "Give up.")
    assert store.thumbs("s1", qa, up=False)
    for min_score in (2, 4, 5):
        selector = PositiveExampleSelector(store=store, min_score=min_score, k=5)
        assert selector.select_examples({"input": "reset password"}) == []


def test_example_selector_add_example(store: SessionStore) -> None:
    selector = PositiveExampleSelector(store=store)
    selector.add_example({"question": FRANCE_Q, "answer": FRANCE_A})
    assert selector.select_examples({"input": "France capital"}) == [
        {"question": FRANCE_Q, "answer": FRANCE_A}
    ]


# -- what add_feedback and clear_feedback answer: recorded when, remembered or not ----------

RECORDED_AT = re.compile(r"\(recorded at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\)")


def recorded_at(answer: str) -> datetime:
    found = RECORDED_AT.search(answer)
    assert found is not None, answer
    return datetime.strptime(found.group(1), "%Y-%m-%dT%H:%M:%S%z")


def test_add_feedback_says_when_it_was_recorded_and_whether_the_turn_is_remembered(
    store: SessionStore,
) -> None:
    qa = record(store, "s1", PASSWORD_Q, PASSWORD_A)
    add = tools(store, session_id="s1")["add_feedback"]
    liked = add.invoke({"qa_id": qa, "feedback_score": 5})
    assert liked.startswith(f"Feedback saved for turn {qa} (recorded at ")
    assert "The turn is now remembered" in liked and "not remembered" not in liked
    entry = store.get_entry("s1", qa)
    assert entry is not None and entry.feedback_time is not None
    assert recorded_at(liked) == entry.feedback_time.replace(microsecond=0)

    disliked = add.invoke({"qa_id": qa, "feedback_score": 2, "feedback_text": "wrong"})
    assert "The turn is not remembered" in disliked and "rated 4 or more" in disliked
    assert recorded_at(disliked) >= recorded_at(liked)
    # a correction always counts as liked, whatever the score
    corrected = add.invoke({"qa_id": qa, "feedback_score": 1, "correction": "Use the link."})
    assert "now remembered" in corrected
    # a comment alone keeps what the score says
    assert "now remembered" in add.invoke({"qa_id": qa, "feedback_text": "thanks"})


def test_clear_feedback_says_the_turn_is_no_longer_remembered(store: SessionStore) -> None:
    qa = record(store, "s1", PASSWORD_Q, PASSWORD_A)
    assert store.thumbs("s1", qa, up=True)
    cleared = tools(store, session_id="s1")["clear_feedback"].invoke({})  # the newest turn
    assert cleared.startswith(f"Feedback cleared for turn {qa} (recorded at ")
    assert "The turn is not remembered" in cleared
    entry = store.get_entry("s1", qa)
    assert entry is not None and entry.feedback_time is not None
    assert recorded_at(cleared) == entry.feedback_time.replace(microsecond=0)


def test_remembered_follows_the_toolkits_min_score(store: SessionStore) -> None:
    qa = record(store, "s1", PASSWORD_Q, PASSWORD_A)
    strict = tools(store, session_id="s1", min_score=5)
    answer = strict["add_feedback"].invoke({"qa_id": qa, "feedback_score": 4})
    assert "not remembered" in answer and "rated 5 or more" in answer
    assert PASSWORD_A not in strict["search_positive_memory"].invoke({"query": "password"})
    assert "now remembered" in tools(store, session_id="s1")["add_feedback"].invoke(
        {"qa_id": qa, "feedback_score": 4}
    )


async def test_async_answers_say_it_too(store: SessionStore) -> None:
    qa = record(store, "s1", PASSWORD_Q, PASSWORD_A)
    t = tools(store, session_id="s1")
    added = await t["add_feedback"].ainvoke({"qa_id": qa, "feedback_score": 5})
    assert "now remembered" in added and recorded_at(added)
    cleared = await t["clear_feedback"].ainvoke({"qa_id": qa})
    assert "not remembered" in cleared and recorded_at(cleared) >= recorded_at(added)


def test_search_hands_the_memories_to_a_tool_call_as_its_artifact(store: SessionStore) -> None:
    qa = record(store, "s1", PASSWORD_Q, PASSWORD_A)
    assert store.thumbs("s1", qa, up=True)
    search = tools(store)["search_positive_memory"]
    call = {"name": search.name, "args": {"query": "password"}, "id": "c1", "type": "tool_call"}
    message = search.invoke(call)
    assert isinstance(message, ToolMessage) and PASSWORD_A in message.content
    [doc] = message.artifact
    assert (doc.metadata["qa_id"], doc.metadata["session_id"]) == (qa, "s1")
    assert doc.metadata["source"] == "feedback_plugin.memory"
    empty = search.invoke({**call, "args": {"query": "capital of France"}})
    assert (empty.content, empty.artifact) == ("No remembered answers match.", [])
    failed = search.invoke({**call, "args": {}})
    assert failed.content.startswith("Error:") and failed.status == "error"
    assert isinstance(search.invoke({"query": "password"}), str)  # no tool call: the text
