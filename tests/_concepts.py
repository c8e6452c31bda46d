"""A fake embedding model that knows a few concepts: meaning without the real model.

:class:`ConceptEmbeddings` subclasses LangChain's ``Embeddings`` (the real API, not
a mock). Words map to concepts through a small synonym table, so "I forgot my
login credentials, what now?" and "How do I reset my password?" share concepts
(recover, secret, access) without sharing a word, while "Can I export my notes
as a PDF?" shares none with them. Deterministic and instant: for tests of the
plumbing of memory by meaning (the demo chat, the REST API); the real model's
recall is measured in ``benchmarks/bench_memory.py`` and checked in the tests
marked ``slow`` that load it. The same table as ``tests/contract/test_contract_meaning.py``'s
fake.
"""

from __future__ import annotations

import math
import re
import threading

from langchain_core.embeddings import Embeddings

CONCEPTS = {
    "password": "secret", "credentials": "secret", "passcode": "secret",
    "reset": "recover", "forgot": "recover", "lost": "recover", "recover": "recover",
    "login": "access", "sign": "access", "log": "access", "account": "access",
    "invoice": "bill", "invoices": "bill", "receipt": "bill", "billing": "bill",
    "download": "fetch", "export": "fetch", "save": "fetch", "get": "fetch",
    "offline": "nonet", "internet": "nonet", "connection": "nonet", "plane": "nonet",
    "dark": "theme", "theme": "theme", "colours": "theme", "night": "theme",
    "share": "invite", "invite": "invite", "teammate": "invite", "colleague": "invite",
}  # fmt: skip
DIMS = sorted(set(CONCEPTS.values()))


class ConceptEmbeddings(Embeddings):
    """Deterministic 'meaning': a normalised bag of concepts (counts its calls)."""

    model = "concepts-v1"

    def __init__(self) -> None:
        self.documents = 0  # texts embedded with embed_documents
        self.queries = 0
        self.lock = threading.Lock()

    def _vec(self, text: str) -> list[float]:
        vec = [0.0] * (len(DIMS) + 1)
        for word in re.findall(r"\w+", text.lower()):
            concept = CONCEPTS.get(word)
            if concept is not None:
                vec[DIMS.index(concept)] += 1.0
        vec[-1] = 0.01  # never the zero vector
        norm = math.sqrt(sum(x * x for x in vec))
        return [x / norm for x in vec]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        with self.lock:
            self.documents += len(texts)
        return [self._vec(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        with self.lock:
            self.queries += 1
        return self._vec(text)
