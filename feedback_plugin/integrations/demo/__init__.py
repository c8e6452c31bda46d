"""The demo chat web app: a LangChain agent whose answers carry 👍 / 👎 buttons.

Install with ``pip install "feedback-plugin[web,agents]"`` and run::

    feedback-plugin serve                              # http://127.0.0.1:8000
    feedback-plugin serve --port 9000 --store ./my-store

or build the app yourself (``uvicorn --factory
feedback_plugin.integrations.webapp:create_demo_app``).

The package's modules:

* :mod:`.content`: the help-centre articles, their word-overlap retriever and
  tool, the chat model from the environment (``langchain-core`` only, no FastAPI;
  ``examples/chat_loop.py`` uses it too);
* :mod:`.agent`: the LangChain agent and how a chat turn streams as events;
* :mod:`.memory`: how liked turns are found, by words or (the ``semantic``
  extra) by words and meaning with the local embedding model;
* :mod:`.models`: the chat routes' request and response bodies;
* :mod:`.app`: :func:`~.app.create_demo_app`, the FastAPI app and its routes.

``feedback_plugin.integrations.webapp`` re-exports ``create_demo_app`` and
``STATIC_DIR``. Importing this package imports none of them.

What it serves:

* ``GET /``: the chat page (``static/index.html``, ``app.js``, ``style.css``;
  no build step, nothing from a CDN). Every answer carries the
  ``<feedback-buttons>`` web component (``static/feedback-buttons.js``, see
  ``docs/web.md``); a side panel lists the session's turns with their ratings
  and the memories used for the selected answer.
* ``POST /api/chat/stream``: ``{"session_id", "question"}`` → NDJSON events,
  one JSON object a line: ``{"type": "qa_id", "qa_id", "session_id"}`` first
  (before any token: the page puts the thumbs under the answer at once), then
  ``{"type": "token", "text"}`` for the answer's pieces (``{"type": "reset"}``
  when text already sent turns out to precede a tool call, so it was no
  answer), and last ``{"type": "answer", ...}`` with the fields of
  ``POST /api/chat``'s answer, or ``{"type": "error", "detail"}``.
* ``POST /api/chat``: the same turn in one JSON answer: ``{"qa_id", "answer",
  "responder", "offline", "recorded", "context": [...], "memories": [...]}``.
* ``GET /api/chat/history?session_id=...``: the session's turns in that same
  shape (sources and memories rebuilt from each turn's recorded context), plus
  their ratings: what the page shows after a reload.
* ``GET /api/info``: which responder answers, whether an API key is needed, how
  memory is searched (``memory_search``: by meaning with the local model, or by words).
* Everything of :func:`~feedback_plugin.integrations.rest.create_router`
  (turns, feedback, sessions, memory search) under ``/api``; ``GET /api/memory``
  searches with the app's embeddings (by words while the local model loads) and
  says how each hit was found (``search``, ``found_by``, ``similarity``).

The chat is a LangChain v1 agent, recorded by
:class:`~feedback_plugin.middleware.FeedbackMiddleware` (no callback handler;
the demo's :class:`~.memory.ExplainedMemoryMiddleware` is one that finds memory
by meaning too and marks what meaning found)::

    create_agent(model, tools=[search_help_centre],        # a retriever tool
                 middleware=[ExplainedMemoryMiddleware(store, embeddings=..., k=3),
                             MemoriesAsContext()],
                 checkpointer=InMemorySaver())
    agent.astream({"messages": [question]},
                  {"configurable": {"thread_id": ..., "user_id": <the API key's user>},
                   "metadata": {"session_id": ..., "responder": ...}},
                  stream_mode=["custom", "messages"])

The middleware names the turn (its ``qa_id`` arrives on the ``custom`` stream
before the model speaks), puts the user's liked turns that match the question
into the model's system message, and records the turn when the model answers:
question, final answer, and as context the articles the tool retrieved plus
the liked turns the model was shown (the app's second middleware adds those,
so a reload can show them). The conversation of each session is kept by the
checkpointer (in memory, bounded) so a real model sees the earlier turns.

The model is the chat model named by ``$FEEDBACK_PLUGIN_CHAT_MODEL`` (for
example ``openai:gpt-4o-mini``, through ``langchain.chat_models.init_chat_model``;
it needs the provider's package and key, and must support tool calling), or,
when none is configured, the built-in *offline responder*,
:class:`~feedback_plugin.integrations.offline_model.OfflineChatModel`: it
calls the help-centre tool, then answers with a liked (or corrected) earlier
answer to the same question from its system message -- word for word when the
questions share their words, after "From an answer you liked: " when memory
found it by meaning (the same question in other words) -- else with the best
article's reply. The page labels it as such, and says which memories an
answer used and whether they were found by meaning.

The documents are six help-centre articles of "Acme Notes", a fictional
note-taking app, shipped as package data (``integrations/data/docs.json``).
"""
