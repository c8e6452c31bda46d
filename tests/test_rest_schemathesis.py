"""Schemathesis against the REST API's own OpenAPI schema: no input makes a server error.

Every operation is fuzzed (schema-valid and schema-violating data) with a
valid bearer key, over a real diskcache store that holds turns; each
generated case is also replayed against a turn that exists, so the fuzzed
bodies reach the write path and not just the 404. Feedback in words has its
chat model (a scripted ``BaseChatModel`` that always finds a score of 4), so
those bodies reach the store too.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from _fakes import ScriptedChatModel  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from feedback_plugin import SessionStore  # noqa: E402
from feedback_plugin.integrations.rest import ApiKeyAuth, create_app  # noqa: E402

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SESSION = "fuzz/session ?#"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


# The schema must exist when pytest collects the tests (schemathesis's lazy
# ``from_fixture`` loader breaks on pytest 9: it reads the removed
# ``Function._nodeid``), so the app is built at import, over a store in a
# temporary directory; the constructor does no I/O and nothing touches the
# store until the fixture below fills it (and removes the directory after).
_DIR = Path(tempfile.mkdtemp(prefix="feedback-plugin-fuzz-"))
STORE = SessionStore(_DIR / "store")
MODEL = ScriptedChatModel(script=['{"score": 4}'], cycle=True)
APP = create_app(
    STORE, auth=ApiKeyAuth({KEY: "fuzzer"}), allowed_hosts=["testserver"], feedback_model=MODEL
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def existing_turn() -> Iterator[str]:
    """Fill the store: three turns of the fuzzer (one liked) and one of another user."""
    turns = [
        STORE.record(SESSION, f"question {i} password", f"answer {i}", user="fuzzer")
        for i in range(3)
    ]
    STORE.thumbs(SESSION, turns[0].qa_id, up=True, user="fuzzer")
    STORE.record("other", "someone else's", "turn", user="bystander")
    yield turns[1].qa_id
    STORE.close()
    shutil.rmtree(_DIR, ignore_errors=True)


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=75,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_server_error(case: Any, existing_turn: str) -> None:
    case.call_and_validate(headers=AUTH, checks=CHECKS)
    # Replay the generated case on a turn that exists.
    if case.path_parameters and "qa_id" in case.path_parameters:
        case.path_parameters["qa_id"] = existing_turn
    if isinstance(case.query, dict) and "session_id" in case.query:
        case.query["session_id"] = SESSION
    case.call_and_validate(headers=AUTH, checks=CHECKS)


def _everything() -> list[str]:
    return sorted(e.model_dump_json() for e in STORE.iter_entries())


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_without_a_valid_key_every_operation_is_401(case: Any, existing_turn: str) -> None:
    before = _everything()
    for headers in ({"Authorization": "Bearer not-a-key"}, {"Authorization": ""}):
        if case.path_parameters and "qa_id" in case.path_parameters:
            case.path_parameters["qa_id"] = existing_turn
        if isinstance(case.query, dict) and "session_id" in case.query:
            case.query["session_id"] = SESSION
        response = case.call(headers=headers)
        if case.method.upper() != case.operation.method.upper():
            # the unsupported-method phase: 405, or 401 when another operation of
            # the same path has that method
            assert response.status_code in (401, 405)
        elif case.path.startswith("/api/") and case.path != "/api/ratings":
            assert response.status_code == 401, response.text
            assert response.headers["www-authenticate"] == ["Bearer"]
        else:
            assert response.status_code == 200  # /healthz, /api/ratings: public
    assert _everything() == before
