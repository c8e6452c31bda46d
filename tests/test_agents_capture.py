"""Recording LangGraph graphs and ``create_agent`` agents with the callback handler.

Real langgraph and langchain, a scripted chat model (tests/_fakes.py); every
scenario runs on diskcache and on Redis and checks exactly what was stored.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _fakes import ScriptedChatModel, tool_call
from _redis import REDIS_URL, require_redis
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import create_retriever_tool, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.func import entrypoint
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, interrupt

from feedback_plugin import FeedbackCallbackHandler, FeedbackToolkit, SessionStore

ARTICLES = [
    Document(page_content="Reset your password from Settings > Security."),
    Document(page_content="Invoices are under Billing > History."),
]


class KeywordRetriever(BaseRetriever):
    """Articles that share a word with the query (a real LangChain retriever)."""

    docs: list[Document]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        words = set(query.lower().split())
        return [d for d in self.docs if words & set(d.page_content.lower().split())]


@pytest.fixture(params=["disk", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    if request.param == "disk":
        s = SessionStore(tmp_path / "store")
    else:
        require_redis()
        s = SessionStore(REDIS_URL, namespace=f"test-{uuid.uuid4().hex}")
    yield s
    if request.param == "redis":
        s.backend.drop()  # type: ignore[attr-defined]
    s.close()


def turns(store: SessionStore, session: str, user: str | None = None) -> list[tuple[str, str]]:
    return [(e.question, e.answer) for e in store.get_session(session, user=user)]


def chatbot(model: ScriptedChatModel, **compile_options: Any) -> Any:
    def chat(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("chat", chat)
    graph.add_edge(START, "chat")
    graph.add_edge("chat", END)
    return graph.compile(checkpointer=InMemorySaver(), **compile_options)


def config(store: SessionStore, thread: str, **configurable: Any) -> dict[str, Any]:
    return {
        "configurable": {"thread_id": thread, **configurable},
        "callbacks": [FeedbackCallbackHandler(store)],
    }


# -- a MessagesState chatbot ------------------------------------------------------------------


def _run(app: Any, mode: str, inputs: Any, cfg: dict[str, Any]) -> None:
    if mode == "invoke":
        app.invoke(inputs, cfg)
    elif mode.startswith("stream:"):
        list(app.stream(inputs, cfg, stream_mode=mode.split(":", 1)[1]))
    else:
        raise AssertionError(mode)


@pytest.mark.parametrize("mode", ["invoke", "stream:messages", "stream:updates", "stream:values"])
def test_a_chatbot_turn_is_its_question_and_final_ai_message(
    store: SessionStore, mode: str
) -> None:
    app = chatbot(ScriptedChatModel(script=["Hello there!", "Use the reset link."]))
    cfg = config(store, "t1")
    _run(app, mode, {"messages": [("user", "hi")]}, cfg)
    _run(app, mode, {"messages": [("user", "How do I reset my password?")]}, cfg)
    assert turns(store, "t1") == [
        ("hi", "Hello there!"),
        ("How do I reset my password?", "Use the reset link."),
    ]


async def test_a_chatbot_under_ainvoke_and_astream_events(store: SessionStore) -> None:
    app = chatbot(ScriptedChatModel(script=["One.", "Two."]))
    cfg = config(store, "t1")
    await app.ainvoke({"messages": [("user", "first?")]}, cfg)
    async for _ in app.astream_events({"messages": [("user", "second?")]}, cfg, version="v2"):
        pass
    assert turns(store, "t1") == [("first?", "One."), ("second?", "Two.")]


def test_answers_made_of_content_blocks_are_joined_as_text(store: SessionStore) -> None:
    answer = AIMessage(
        content=[{"type": "text", "text": "Part one."}, {"type": "text", "text": " Two."}]
    )
    app = chatbot(ScriptedChatModel(script=[answer]))
    app.invoke({"messages": [("user", "q?")]}, config(store, "t1"))
    assert turns(store, "t1") == [("q?", "Part one. Two.")]


def test_a_subgraph_and_the_functional_api(store: SessionStore) -> None:
    inner = chatbot(ScriptedChatModel(script=["From the subgraph."]))
    outer = StateGraph(MessagesState)
    outer.add_node("inner", inner)
    outer.add_edge(START, "inner")
    outer.add_edge("inner", END)
    outer.compile(checkpointer=InMemorySaver()).invoke(
        {"messages": [HumanMessage("nested?")]}, config(store, "t-sub")
    )
    assert turns(store, "t-sub") == [("nested?", "From the subgraph.")]

    model = ScriptedChatModel(script=["Functional answer."])

    @entrypoint(checkpointer=InMemorySaver())
    def workflow(messages: list[Any]) -> dict[str, Any]:
        return {"messages": [*messages, model.invoke(messages)]}

    workflow.invoke([HumanMessage("functional?")], config(store, "t-func"))
    assert turns(store, "t-func") == [("functional?", "Functional answer.")]


# -- RAG inside a MessagesState graph ---------------------------------------------------------


class RagState(MessagesState):
    docs: list[str]


def test_rag_in_a_messages_graph_records_the_answer_and_its_documents(
    store: SessionStore,
) -> None:
    retriever = KeywordRetriever(docs=ARTICLES)
    model = ScriptedChatModel(script=["Settings > Security."])

    def retrieve(state: RagState) -> dict[str, Any]:
        docs = retriever.invoke(str(state["messages"][-1].text))
        return {"docs": [d.page_content for d in docs]}

    def answer(state: RagState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(RagState)
    graph.add_node("retrieve", retrieve)
    graph.add_node("answer", answer)
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "answer")
    graph.add_edge("answer", END)
    app = graph.compile(checkpointer=InMemorySaver())
    app.invoke({"messages": [("user", "forgot my password")]}, config(store, "rag"))
    [entry] = store.get_session("rag")
    assert (entry.question, entry.answer) == ("forgot my password", "Settings > Security.")
    assert entry.context == [ARTICLES[0].page_content]


# -- create_agent with tools ------------------------------------------------------------------


@tool
def word_count(text: str) -> int:
    """Count the words of a text."""
    return len(text.split())


@tool(response_format="content_and_artifact")
def search_articles(query: str) -> tuple[str, list[Document]]:
    """Search the help centre; the documents travel as the artifact."""
    found = [d for d in ARTICLES if "invoice" in d.page_content.lower()]
    return "\n".join(d.page_content for d in found), found


def test_an_agent_turn_with_tools_records_the_final_answer_and_retrieved_documents(
    store: SessionStore,
) -> None:
    retriever_tool = create_retriever_tool(
        KeywordRetriever(docs=ARTICLES), "help_centre", "Search the help centre."
    )
    model = ScriptedChatModel(
        script=[
            tool_call("help_centre", {"query": "reset password"}),
            tool_call("word_count", {"text": "a b c"}),
            "Go to Settings > Security.",
            tool_call("search_articles", {"query": "invoices"}),
            "Billing > History.",
        ]
    )
    agent = create_agent(
        model, [retriever_tool, word_count, search_articles], checkpointer=InMemorySaver()
    )
    cfg = config(store, "agent-1")
    agent.invoke({"messages": [("user", "How do I reset my password?")]}, cfg)
    list(agent.stream({"messages": [("user", "Where are invoices?")]}, cfg, stream_mode="updates"))
    first, second = store.get_session("agent-1")
    assert (first.question, first.answer) == (
        "How do I reset my password?",
        "Go to Settings > Security.",
    )
    assert first.context == [ARTICLES[0].page_content]
    assert (second.question, second.answer) == ("Where are invoices?", "Billing > History.")
    assert second.context == [ARTICLES[1].page_content]  # the tool's artifact


# -- human in the loop ------------------------------------------------------------------------


def approval_graph(checkpointer: Any, model: ScriptedChatModel) -> Any:
    def ask(state: MessagesState) -> dict[str, Any]:
        decision = interrupt("Delete the account?")
        return {"messages": [model.invoke([*state["messages"], HumanMessage(str(decision))])]}

    graph = StateGraph(MessagesState)
    graph.add_node("ask", ask)
    graph.add_edge(START, "ask")
    graph.add_edge("ask", END)
    return graph.compile(checkpointer=checkpointer)


def test_an_interrupted_turn_is_recorded_once_when_resumed(store: SessionStore) -> None:
    app = approval_graph(InMemorySaver(), ScriptedChatModel(script=["Deleted."]))
    cfg = config(store, "hitl")
    paused = app.invoke({"messages": [("user", "Delete my account")]}, cfg)
    assert "__interrupt__" in paused
    assert store.get_session("hitl") == []  # a paused run records nothing
    resume_id = uuid.uuid4()
    app.invoke(Command(resume="yes"), {**config(store, "hitl"), "run_id": resume_id})
    [entry] = store.get_session("hitl")
    assert (entry.question, entry.answer) == ("Delete my account", "Deleted.")
    assert entry.qa_id == str(resume_id)  # the run that finished the turn names it


@pytest.mark.slow
def test_a_turn_resumed_in_another_process(store: SessionStore, tmp_path: Path) -> None:
    from langgraph.checkpoint.sqlite import SqliteSaver

    db = tmp_path / "checkpoints.sqlite"
    with SqliteSaver.from_conn_string(str(db)) as saver:
        app = approval_graph(saver, ScriptedChatModel(script=["Deleted."]))
        app.invoke({"messages": [("user", "Delete my account")]}, config(store, "hitl-2"))
    assert store.get_session("hitl-2") == []
    location, namespace = store.location, store.namespace
    store.flush()
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from _fakes import ScriptedChatModel
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.types import Command
        from test_agents_capture import approval_graph
        from feedback_plugin import FeedbackCallbackHandler, SessionStore
        store = SessionStore({location!r}, namespace={namespace!r})
        with SqliteSaver.from_conn_string({str(db)!r}) as saver:
            app = approval_graph(saver, ScriptedChatModel(script=["Deleted."]))
            app.invoke(Command(resume="yes"), {{"configurable": {{"thread_id": "hitl-2"}},
                       "callbacks": [FeedbackCallbackHandler(store)]}})
        store.close()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert turns(store, "hitl-2") == [("Delete my account", "Deleted.")]


def test_human_in_the_loop_middleware_records_one_turn(store: SessionStore) -> None:
    model = ScriptedChatModel(
        script=[tool_call("word_count", {"text": "one two"}), "It has two words."]
    )
    agent = create_agent(
        model,
        [word_count],
        middleware=[HumanInTheLoopMiddleware(interrupt_on={"word_count": True})],
        checkpointer=InMemorySaver(),
    )
    cfg = config(store, "hitl-mw")
    paused = agent.invoke({"messages": [("user", "How many words in 'one two'?")]}, cfg)
    assert "__interrupt__" in paused
    assert store.get_session("hitl-mw") == []
    agent.invoke(Command(resume={"decisions": [{"type": "approve"}]}), cfg)
    assert turns(store, "hitl-mw") == [("How many words in 'one two'?", "It has two words.")]


# -- users ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Context:
    user_id: str


def test_the_user_comes_from_configurable_or_the_runtime_context(store: SessionStore) -> None:
    model = ScriptedChatModel(script=["For alice.", "For bob.", "For carol."], cycle=True)
    app = chatbot(model)
    app.invoke({"messages": [("user", "q1")]}, config(store, "t-a", user_id="alice"))
    agent = create_agent(model, [], context_schema=Context, checkpointer=InMemorySaver())
    agent.invoke({"messages": [("user", "q2")]}, config(store, "t-b"), context=Context("bob"))
    agent2 = create_agent(model, [], checkpointer=InMemorySaver())
    agent2.invoke(
        {"messages": [("user", "q3")]}, config(store, "t-c"), context={"user_id": "carol"}
    )
    assert turns(store, "t-a", user="alice") == [("q1", "For alice.")]
    assert turns(store, "t-b", user="bob") == [("q2", "For bob.")]
    assert turns(store, "t-c", user="carol") == [("q3", "For carol.")]
    assert store.get_session("t-a") == []  # not visible without the user


# -- tools that follow the thread -------------------------------------------------------------


def test_a_toolkit_without_a_session_rates_turns_of_the_thread_it_runs_in(
    store: SessionStore,
) -> None:
    tools = FeedbackToolkit(store=store).get_tools()
    model = ScriptedChatModel(
        script=[
            "Use the reset link.",  # thread a, turn 1
            "Billing > History.",  # thread b, turn 1
            # thread a, turn 2: the user says the last answer was great
            tool_call("add_feedback", {"feedback_score": 5, "feedback_text": "great"}),
            "Thanks, noted!",
        ]
    )
    agent = create_agent(model, tools, checkpointer=InMemorySaver())
    agent.invoke({"messages": [("user", "reset?")]}, config(store, "a", user_id="alice"))
    agent.invoke({"messages": [("user", "invoices?")]}, config(store, "b", user_id="alice"))
    agent.invoke({"messages": [("user", "that was great")]}, config(store, "a", user_id="alice"))
    rated = store.get_session("a", user="alice")
    assert [(e.answer, e.feedback_score, e.feedback_text) for e in rated] == [
        ("Use the reset link.", 5, "great"),
        ("Thanks, noted!", None, None),
    ]
    assert [e.feedback_score for e in store.get_session("b", user="alice")] == [None]


def test_a_prebuilt_react_agent_turn(store: SessionStore) -> None:
    import warnings

    with warnings.catch_warnings():  # deprecated in favour of create_agent, still in use
        warnings.simplefilter("ignore", DeprecationWarning)
        from langgraph.prebuilt import create_react_agent

        model = ScriptedChatModel(script=[tool_call("word_count", {"text": "x y z"}), "Three."])
        agent = create_react_agent(model, [word_count], checkpointer=InMemorySaver())
    agent.invoke({"messages": [("user", "How many words in 'x y z'?")]}, config(store, "react"))
    assert turns(store, "react") == [("How many words in 'x y z'?", "Three.")]


def test_the_handlers_user_is_the_fallback_not_an_override(store: SessionStore) -> None:
    app = chatbot(ScriptedChatModel(script=["For bob.", "For nobody."]))
    handler = FeedbackCallbackHandler(store, user="fallback")
    app.invoke(
        {"messages": [("user", "q1")]},
        {"configurable": {"thread_id": "t", "user_id": "bob"}, "callbacks": [handler]},
    )
    app.invoke(
        {"messages": [("user", "q2")]}, {"configurable": {"thread_id": "u"}, "callbacks": [handler]}
    )
    assert turns(store, "t", user="bob") == [("q1", "For bob.")]
    assert turns(store, "u", user="fallback") == [("q2", "For nobody.")]
