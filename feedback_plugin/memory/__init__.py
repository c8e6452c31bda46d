"""Positive memory: liked turns handed back to the chain."""

from .examples import PositiveExampleSelector
from .index import MemoryIndex
from .retriever import PositiveMemoryRetriever, search_memory

__all__ = ["MemoryIndex", "PositiveExampleSelector", "PositiveMemoryRetriever", "search_memory"]
