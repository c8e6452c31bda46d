"""What the demo chat knows, without FastAPI or an agent: its articles and its model.

* the help centre: six articles of "Acme Notes", a fictional note-taking app,
  shipped as package data (``integrations/data/docs.json``, read by
  :func:`load_documents`), ranked by shared content words
  (:class:`HelpCentreRetriever`, :func:`rank_documents`) and offered to the
  agent as a retriever tool (:func:`help_centre_tool`);
* the chat model: the one named by ``$FEEDBACK_PLUGIN_CHAT_MODEL``
  (:func:`model_from_env`), else the built-in offline responder;
* how a liked turn the model was shown is written into a turn's recorded
  context, with how memory found it (:func:`memory_text`, :func:`split_memory_text`);
* how memory is searched: by meaning too with the local embedding model
  (:func:`feedback_plugin.embeddings.local`) when the ``semantic`` extra is
  installed, unless ``$FEEDBACK_PLUGIN_EMBEDDINGS=off``; else by words (BM25)
  (:func:`embeddings_from_env`, :func:`describe_memory_search`).

Needs ``langchain-core`` only, so ``examples/chat_loop.py`` uses the same
articles and ranking as the web demo.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any, Literal, NamedTuple

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.prompts import PromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import BaseTool, create_retriever_tool

from ...embeddings import EXTRA_HINT, LocalEmbeddings, is_available, local
from ..explained_memory import found_by_meaning
from ..offline_model import (
    HELP_TOOL,
    NO_ANSWER,
    OFFLINE_RESPONDER,
    REPLY_PREFIX,
    LikedAnswer,
    content_words,
)

__all__ = [
    "DOCS_K",
    "ENV_CHAT_MODEL",
    "ENV_EMBEDDINGS",
    "NO_ANSWER",
    "OFFLINE_RESPONDER",
    "SUGGESTIONS",
    "HelpCentreRetriever",
    "MemoryMode",
    "RecordedMemory",
    "content_words",
    "describe_memory_search",
    "describe_model",
    "embeddings_from_env",
    "help_centre_tool",
    "load_documents",
    "memory_text",
    "model_from_env",
    "rank_documents",
    "split_memory_text",
]

log = logging.getLogger("feedback_plugin")

ENV_CHAT_MODEL = "FEEDBACK_PLUGIN_CHAT_MODEL"
ENV_EMBEDDINGS = "FEEDBACK_PLUGIN_EMBEDDINGS"
"""``off``: memory is searched by words only, even with the local model installed."""
DOCS_K = 2
"""Articles the help-centre tool returns at most."""

SUGGESTIONS = [
    "How do I reset my password?",
    "Where can I download my invoices?",
    "Can I export my notes as a PDF?",
    "Does the app work offline?",
]
"""Questions the page offers to a newcomer (and the terminal chat loop asks)."""


# -- documents and retrieval ----------------------------------------------------------


def load_documents() -> list[Document]:
    """The bundled help-centre articles: text, and ``id`` / ``title`` / ``reply`` metadata."""
    raw = json.loads(
        (resources.files("feedback_plugin.integrations") / "data" / "docs.json").read_text(
            encoding="utf-8"
        )
    )
    return [
        Document(
            page_content=f"{d['title']}. {d['text']}",
            metadata={"id": d["id"], "title": d["title"], "reply": d["answer"]},
        )
        for d in raw
    ]


def rank_documents(query: str, docs: Sequence[Document], k: int = DOCS_K) -> list[Document]:
    """The ``k`` documents sharing the most content words with ``query`` (ties: in order).

    Documents sharing none are left out. Enough for six articles; a real app
    uses a vector store.
    """
    q = content_words(query)
    scored = [(len(q & content_words(d.page_content)), i, d) for i, d in enumerate(docs)]
    scored = [s for s in scored if s[0] > 0]
    scored.sort(key=lambda s: (-s[0], s[1]))
    return [d for _, _, d in scored[:k]]


class HelpCentreRetriever(BaseRetriever):
    """Ranks the bundled articles by the content words they share with the query
    (:func:`rank_documents`). Enough for six documents; a real app uses a vector store."""

    docs: list[Document]
    k: int = DOCS_K

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return rank_documents(query, self.docs, self.k)


def help_centre_tool(docs: list[Document] | None = None) -> BaseTool:
    """The agent's retriever tool over the help centre (``docs``: the bundled articles).

    Each article comes back as ``[id] title. text`` and a ``Suggested reply:``
    line (what :class:`~feedback_plugin.integrations.offline_model.OfflineChatModel`
    answers with). FeedbackMiddleware records the retrieved documents as the
    turn's context.
    """
    return create_retriever_tool(
        HelpCentreRetriever(docs=load_documents() if docs is None else docs),
        HELP_TOOL,
        "Search the Acme Notes help centre. Input: the user's question. Returns the "
        "matching articles, each with a suggested reply.",
        document_prompt=PromptTemplate.from_template(
            "[{id}] {page_content}\n" + REPLY_PREFIX + "{reply}"
        ),
    )


# -- memories in a turn's context ---------------------------------------------------------

MEMORY_PREFIX = "Question: "
MEMORY_ANSWER = "\nAnswer: "
MEMORY_FOUND = "\nFound by: "
_FOUND = re.compile(
    r"\nFound by: (?P<how>words\+meaning|meaning)"
    r"(?: \(similarity (?P<similarity>-?[0-9]+(?:\.[0-9]+)?)\))?\Z"
)


class RecordedMemory(NamedTuple):
    """A liked turn the model was shown, as a turn's recorded context holds it."""

    question: str
    answer: str
    found_by: str
    """``"words"``, ``"meaning"`` or ``"words+meaning"``."""
    similarity: float | None
    """The cosine similarity to the turn's question, when found by meaning."""

    @property
    def document_text(self) -> str:
        """The remembered turn's ``entry_document(...).page_content`` (no ``Found by``)."""
        return f"{MEMORY_PREFIX}{self.question}{MEMORY_ANSWER}{self.answer}"


def memory_text(liked: LikedAnswer) -> str:
    """A liked turn as recorded context: ``entry_document(...).page_content`` of that turn,
    plus, when memory found it by meaning, a last line ``Found by: meaning (similarity
    0.52)`` (or ``words+meaning``)."""
    text = f"{MEMORY_PREFIX}{liked.question}{MEMORY_ANSWER}{liked.answer}"
    if found_by_meaning(liked.found_by):
        text += f"{MEMORY_FOUND}{liked.found_by}"
        if liked.similarity is not None:
            text += f" (similarity {liked.similarity:.2f})"
    return text


def split_memory_text(text: str) -> RecordedMemory | None:
    """The parts of a :func:`memory_text`, or ``None`` for other context (found by
    ``"words"`` when it has no ``Found by`` line)."""
    if not text.startswith(MEMORY_PREFIX) or MEMORY_ANSWER not in text:
        return None
    found, similarity = "words", None
    how = _FOUND.search(text)
    if how is not None:
        text = text[: how.start()]
        found = how.group("how")
        similarity = float(how.group("similarity")) if how.group("similarity") else None
    question, _, answer = text[len(MEMORY_PREFIX) :].partition(MEMORY_ANSWER)
    return RecordedMemory(question, answer, found, similarity)


# -- the model --------------------------------------------------------------------------


def describe_model(model: Any) -> str:
    """A chat model's name for the page (``model_name``, ``model``, else its class)."""
    for attr in ("model_name", "model"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return getattr(model, "name", None) or type(model).__name__


def calls_tools(model: BaseChatModel, tool: BaseTool) -> bool:
    """Whether ``model`` supports tool calling (``bind_tools``), as the agent needs."""
    try:
        model.bind_tools([tool])
    except NotImplementedError:
        return False
    return True


def model_from_env(tool: BaseTool) -> tuple[BaseChatModel | None, str, str | None]:
    """(model, its label, a note on why it is not used) from ``$FEEDBACK_PLUGIN_CHAT_MODEL``.

    ``(None, OFFLINE_RESPONDER, None)`` when the variable is not set; a model
    that cannot start or cannot call tools gives ``None`` and a note (logged).
    """
    name = os.environ.get(ENV_CHAT_MODEL, "").strip()
    if not name:
        return None, OFFLINE_RESPONDER, None
    try:
        init_chat_model = importlib.import_module("langchain.chat_models").init_chat_model
    except (ImportError, AttributeError):
        note = (
            f"{ENV_CHAT_MODEL}={name!r} is set, but the 'langchain' package is not installed "
            "(pip install langchain plus the provider's package); using the offline responder"
        )
        log.warning("feedback_plugin demo: %s", note)
        return None, OFFLINE_RESPONDER, note
    try:
        model: BaseChatModel = init_chat_model(name)
    except Exception as exc:
        note = f"cannot start chat model {name!r} ({type(exc).__name__}: {exc}); "
        note += "using the offline responder"
        log.warning("feedback_plugin demo: %s", note)
        return None, OFFLINE_RESPONDER, note
    if not calls_tools(model, tool):
        note = f"chat model {name!r} cannot call tools; using the offline responder"
        log.warning("feedback_plugin demo: %s", note)
        return None, OFFLINE_RESPONDER, note
    return model, name, None


# -- how memory is searched ------------------------------------------------------------

_OFF = frozenset({"off", "0", "false", "no", "none", "bm25", "words"})
_ON = frozenset({"", "auto", "on", "1", "true", "yes", "local"})


def embeddings_from_env() -> tuple[Embeddings | None, str | None]:
    """(the memory's embeddings, a note on why there are none) from the environment.

    The local model (:func:`feedback_plugin.embeddings.local`) when the
    ``semantic`` extra is installed, unless ``$FEEDBACK_PLUGIN_EMBEDDINGS`` is
    ``off``; ``None`` (memory by words) otherwise. Nothing is loaded here:
    checking the extra imports neither PyTorch nor sentence-transformers.
    """
    setting = os.environ.get(ENV_EMBEDDINGS, "").strip().lower()
    if setting in _OFF:
        return None, f"{ENV_EMBEDDINGS}={setting} is set: memory is searched by words only"
    note = None
    if setting not in _ON:
        note = f"{ENV_EMBEDDINGS}={setting!r} is neither 'off' nor 'local'; taken as 'local'"
        log.warning("feedback_plugin demo: %s", note)
    if not is_available():
        missing = (
            f"the local embedding model is not installed ({EXTRA_HINT}): "
            "memory is searched by words only"
        )
        return None, f"{note}; {missing}" if note else missing
    return local(), note


class MemoryMode(NamedTuple):
    """How memory is searched, as the page tells it (``GET /api/info`` → ``memory_search``)."""

    mode: Literal["meaning", "words"]
    """``"meaning"`` (by words and by meaning, fused) or ``"words"`` (BM25 only)."""
    model: str | None
    """The embedding model's name (``None`` by words)."""
    local: bool
    """Whether that model runs in this process (nothing sent elsewhere)."""
    label: str
    """What the page says."""


def describe_memory_search(found: Embeddings | None) -> MemoryMode:
    """How memory searched with ``found`` embeddings (``None``: by words) is described."""
    if found is None:
        return MemoryMode("words", None, False, "memory found by words (BM25)")
    if isinstance(found, LocalEmbeddings):
        label = f"memory found by meaning: {found.model}, on this machine"
        return MemoryMode("meaning", found.model, True, label)
    name = describe_model(found)
    return MemoryMode("meaning", name, False, f"memory found by meaning: {name}")
