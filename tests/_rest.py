"""The REST tests' callers: one API key per user and scope, and a host the app answers to."""

from __future__ import annotations

from typing import Any

LOCAL = "http://localhost"  # a host the app answers to (not TestClient's "testserver")
ALICE = {"Authorization": "Bearer alice-key"}
BOB = {"Authorization": "Bearer bob-key"}
ALICE_RO = {"Authorization": "Bearer alice-read-only"}
ALICE_WO = {"Authorization": "Bearer alice-feedback-only"}
KEYS: dict[str, Any] = {
    "alice-key": "alice",
    "bob-key": "bob",
    "alice-read-only": {"user": "alice", "scopes": ["read"]},
    "alice-feedback-only": {"user": "alice", "scopes": ["feedback"]},
}
