"""Shared fixtures: every test gets real diskcache directories (and a cache directory for
Redis memory index files) under tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from feedback_plugin import SessionStore


@pytest.fixture(autouse=True)
def _default_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default store (FEEDBACK_PLUGIN_DIR) at a fresh directory per test."""
    path = tmp_path / "default-store"
    monkeypatch.setenv("FEEDBACK_PLUGIN_DIR", str(path))
    # Redis memory index files (backends/redis_index.py): this test's own cache directory
    monkeypatch.setenv("FEEDBACK_PLUGIN_CACHE_DIR", str(tmp_path / "cache"))
    return path


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_dir: Path) -> Iterator[SessionStore]:
    """A real diskcache-backed store with the default write-behind queue."""
    s = SessionStore(store_dir)
    yield s
    s.close()
