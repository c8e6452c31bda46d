"""The rating vocabulary (feedback_plugin/ratings.py): each word's truth table, one
meaning of "rated" everywhere, the browser scripts on the server's thresholds, and a
scan that keeps copies of the vocabulary from coming back."""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feedback_plugin import SessionQAEntry, SessionStore, analytics, models, ratings
from feedback_plugin.ratings import (
    NEGATIVE_MAX_SCORE,
    POSITIVE_MIN_SCORE,
    best_answer,
    is_negative,
    is_positive,
    is_rated,
    is_remembered,
)

PACKAGE = Path(__file__).resolve().parents[1] / "feedback_plugin"
STATIC = PACKAGE / "integrations" / "static"
SCRIPTS = [STATIC / "app.js", STATIC / "feedback-buttons.js"]
SCORES = [None, 1, 2, 3, 4, 5]


def turn(score: int | None = None, text: str | None = None, correction: str | None = None) -> Any:
    return SessionQAEntry(
        qa_id="q",
        session_id="s",
        question="?",
        answer="the answer",
        feedback_score=score,
        feedback_text=text,
        correction=correction,
    )


# -- truth tables ------------------------------------------------------------------------


def test_the_scale_and_thresholds() -> None:
    assert (ratings.MIN_SCORE, ratings.MAX_SCORE) == (1, 5)
    assert (ratings.POSITIVE_SCORE, ratings.NEGATIVE_SCORE) == (5, 1)  # thumbs up / down
    assert (POSITIVE_MIN_SCORE, NEGATIVE_MAX_SCORE) == (4, 2)
    # the names the package exported before stay, and are the same objects
    assert (models.POSITIVE_SCORE, models.NEGATIVE_SCORE) == (5, 1)
    assert (models.MIN_SCORE, models.MAX_SCORE) == (1, 5)
    assert (analytics.POSITIVE_MIN_SCORE, analytics.NEGATIVE_MAX_SCORE) == (4, 2)
    assert ratings.thresholds() == {
        "min_score": 1, "max_score": 5, "positive_score": 5, "negative_score": 1,
        "positive_min_score": 4, "negative_max_score": 2,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("score", "positive", "negative", "rated"),
    [
        (None, False, False, False),
        (1, False, True, True),
        (2, False, True, True),
        (3, False, False, True),
        (4, True, False, True),
        (5, True, False, True),
    ],
)
def test_score_words(score: int | None, positive: bool, negative: bool, rated: bool) -> None:
    # a score, an entry and its stored JSON object all say the same
    for form in (score, turn(score), turn(score).model_dump(mode="json")):
        assert is_positive(form) is positive
        assert is_negative(form) is negative
        assert is_rated(form) is rated


def test_rated_means_has_a_score() -> None:
    """A comment or a correction alone is feedback, not a rating: one meaning everywhere."""
    for entry in (turn(text="meh"), turn(correction="better"), turn(text="x", correction="y")):
        assert not is_rated(entry)
        assert not entry.is_rated
        assert analytics.Filter(feedback="unrated").matches(entry)
        assert not analytics.Filter(feedback="rated").matches(entry)
    for score in range(1, 6):
        assert turn(score).is_rated and analytics.Filter(feedback="rated").matches(turn(score))


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("correction", [None, "fixed"])
@pytest.mark.parametrize("min_score", [1, 3, 4, 5])
def test_is_remembered(score: int | None, correction: str | None, min_score: int) -> None:
    expected = correction is not None or (score is not None and score >= min_score)
    entry = turn(score, correction=correction)
    assert is_remembered(entry, min_score) is expected
    assert is_remembered(entry.model_dump(mode="json"), min_score=min_score) is expected
    if min_score == POSITIVE_MIN_SCORE:
        assert is_remembered(entry) is expected  # the default
    # the lowest threshold: what a memory index holds (a score or a correction)
    assert is_remembered(entry, ratings.MIN_SCORE) is (score is not None or correction is not None)


def test_best_answer() -> None:
    assert turn().best_answer == best_answer(turn()) == "the answer"
    assert turn(correction="the fix").best_answer == "the fix"
    assert turn(correction="").best_answer == ""  # an empty correction is still one
    assert best_answer({"answer": "a", "correction": None}) == "a"
    assert best_answer({"answer": "a", "correction": "b"}) == "b"


def test_the_memory_defaults_are_the_threshold() -> None:
    from feedback_plugin import FeedbackToolkit, PositiveExampleSelector, PositiveMemoryRetriever
    from feedback_plugin.memory.retriever import search_memory
    from feedback_plugin.tools import SearchPositiveMemoryTool

    store: Any = None
    assert PositiveMemoryRetriever.model_fields["min_score"].default == POSITIVE_MIN_SCORE
    assert PositiveExampleSelector.model_fields["min_score"].default == POSITIVE_MIN_SCORE
    assert FeedbackToolkit.model_fields["min_score"].default == POSITIVE_MIN_SCORE
    assert SearchPositiveMemoryTool.model_fields["min_score"].default == POSITIVE_MIN_SCORE
    assert search_memory.__kwdefaults__ is not None
    assert search_memory.__kwdefaults__["min_score"] == POSITIVE_MIN_SCORE
    del store


# -- the servers tell the browser --------------------------------------------------------


def test_rest_and_demo_serve_the_thresholds(store: SessionStore) -> None:
    pytest.importorskip("fastapi")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from feedback_plugin.integrations.rest import ApiKeyAuth, create_router

    app = FastAPI()
    app.include_router(create_router(store, auth=ApiKeyAuth({"k": "alice"})))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        response = client.get("/api/ratings")  # no key: nothing secret
        assert response.status_code == 200
        assert response.json() == ratings.thresholds()

    pytest.importorskip("langchain")
    from feedback_plugin.integrations.webapp import create_demo_app

    with TestClient(create_demo_app(store), base_url="http://127.0.0.1") as client:
        assert client.get("/api/info").json()["ratings"] == ratings.thresholds()
        assert client.get("/api/ratings").json() == ratings.thresholds()


def test_the_scripts_take_the_thresholds_from_the_server() -> None:
    """No threshold is written into the JavaScript; each reads the server's numbers."""
    for script in SCRIPTS:
        text = script.read_text(encoding="utf-8")
        # a comparison with 2, 3 or 4 (the scale's ends, 1 and 5, may be checked)
        assert not re.findall(r"(?:>=|<=|>|<)\s*[2-4]\b", text), script.name
        assert "positive_min_score" in text and "negative_max_score" in text, script.name
    assert "/ratings`" in SCRIPTS[1].read_text(encoding="utf-8")  # GET {api-base}/ratings
    assert "state.info.ratings" in SCRIPTS[0].read_text(encoding="utf-8")  # GET /api/info


@pytest.mark.slow  # a real browser
def test_feedback_buttons_show_the_servers_thresholds(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """<feedback-buttons> presses 👍 / 👎 by what GET {api-base}/ratings says: with the
    thresholds moved on the server, a 3 shows 👍 and a 2 shows nothing."""
    import os
    import socket
    import threading
    import time

    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    pytest.importorskip("playwright.sync_api")
    chromium = os.environ.get("FEEDBACK_PLUGIN_CHROMIUM", "/usr/bin/chromium")
    if not os.access(chromium, os.X_OK):
        pytest.skip(f"no chromium at {chromium}")
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles
    from playwright.sync_api import expect, sync_playwright

    from feedback_plugin.integrations.rest import create_router

    monkeypatch.setattr(ratings, "POSITIVE_MIN_SCORE", 3)
    monkeypatch.setattr(ratings, "NEGATIVE_MAX_SCORE", 1)
    app = FastAPI()
    app.include_router(create_router(store))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    page_html = (
        '<script src="/static/feedback-buttons.js"></script>'
        '<feedback-buttons id="three" qa-id="q3" session-id="s" score="3"></feedback-buttons>'
        '<feedback-buttons id="two" qa-id="q2" session-id="s" score="2"></feedback-buttons>'
        '<feedback-buttons id="one" qa-id="q1" session-id="s" score="1"></feedback-buttons>'
    )
    app.get("/")(lambda: HTMLResponse(page_html))

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{sock.getsockname()[1]}/")

                def pressed(element: str, which: str) -> Any:
                    button = page.locator(element).get_by_role("button", name=f"Thumbs {which}")
                    return expect(button)

                pressed("#three", "up").to_have_attribute("aria-pressed", "true")
                pressed("#one", "down").to_have_attribute("aria-pressed", "true")
                pressed("#two", "up").to_have_attribute("aria-pressed", "false")
                pressed("#two", "down").to_have_attribute("aria-pressed", "false")
                assert page.evaluate("document.querySelector('#three').thumbs") == "up"
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


# -- no copies of the vocabulary -----------------------------------------------------------

# Matched against code only: strings and comments are blanked first (tokenize), so
# docstrings may quote "score >= 4" and len(x) < 2 is no score.
DRIFT = {
    "a score compared with a number": re.compile(
        r"\w*score\w*\s*(?:>=|<=|>|<|==|!=)\s*\d|\d\s*(?:>=|<=|>|<|==|!=)\s*[\w.]*score\b", re.I
    ),
    "a literal min_score default": re.compile(r"\bmin_score\s*(?::[^=\n]+)?=\s*\d"),
    "a threshold defined outside ratings.py": re.compile(
        r"^\s*\w*(?:SCORE|POSITIVE|NEGATIVE)\w*\s*(?::[^=\n]+)?=\s*\d", re.M
    ),
    "a copy of best_answer": re.compile(r"correction\s+if\s+[\w.]*correction\s+is\s+not\s+None"),
    "a copy of is_remembered": re.compile(
        r"correction\s+is\s+not\s+None\s+or\b|\bor\s+[\w.]*correction\s+is\s+not\s+None"
    ),
    "a copy of is_rated": re.compile(r"feedback_score\s+is\s+not\s+None\s+or\b"),
    "a private predicate": re.compile(
        r"\bdef\s+(?:in_memory|_remembered|_is_unrated|_is_rated|_has_reference|_reference)\b"
    ),
}


def _code(source: str) -> str:
    """``source`` with every string and comment blanked (line structure kept)."""
    lines = source.splitlines(keepends=True)
    for tok in reversed(list(tokenize.generate_tokens(io.StringIO(source).readline))):
        if tok.type in (tokenize.STRING, tokenize.COMMENT) or tok.type == getattr(
            tokenize, "FSTRING_MIDDLE", -1
        ):
            (srow, scol), (erow, ecol) = tok.start, tok.end
            if srow == erow:
                line = lines[srow - 1]
                lines[srow - 1] = line[:scol] + '""' + line[ecol:]
            else:  # a multi-line string: keep its first and last line ends
                lines[srow - 1] = lines[srow - 1][:scol] + '""\n'
                for row in range(srow, erow - 1):
                    lines[row] = "\n"
                lines[erow - 1] = lines[erow - 1][ecol:]
    return "".join(lines)


def _drift(source: str) -> Iterator[str]:
    code = _code(source)
    for what, pattern in DRIFT.items():
        for match in pattern.finditer(code):
            line = code.count("\n", 0, match.start()) + 1
            yield f"{line}: {what}: {match.group(0).strip()!r}"


def test_the_scan_finds_copies_and_nothing_else() -> None:
    """The scan itself: what it must flag, and what it must leave alone."""
    copies = """
def f(e, score, s):
    if score >= 4: pass
    if 2 >= e.feedback_score: pass
    answer = e.correction if e.correction is not None else e.answer
    return e.correction is not None or score >= min_score
def g(min_score: int = 4, *, k=4): ...
POSITIVE_MIN = 4
def in_memory(e): return e.feedback_score is not None or e.correction is not None
"""
    found = "\n".join(_drift(copies))
    for what in DRIFT:
        assert what in found, what
    fine = '''
"""Positive means score >= 4; min_score = 4 by default."""
def f(word, scheme, args, score):
    if len(word) < 2 or len(scheme) < 4: pass  # score >= 4 in a comment
    if args.min_score > args.max_score: pass
    if MIN_SCORE <= score <= MAX_SCORE and score >= POSITIVE_MIN_SCORE: pass
    text = f"score >= {POSITIVE_MIN_SCORE}"
    corrected = int(e.correction is not None)
    return score - 1
def g(min_score: int = POSITIVE_MIN_SCORE, k: int = 4): ...
MEMORY_MIN_SCORE = POSITIVE_MIN_SCORE
'''
    assert list(_drift(fine)) == []


def test_no_copy_of_the_vocabulary_outside_ratings() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "ratings.py":
            continue
        for hit in _drift(path.read_text(encoding="utf-8")):
            found.append(f"{path.relative_to(PACKAGE)}:{hit}")
    assert found == [], "use feedback_plugin.ratings instead:\n" + "\n".join(found)


def test_the_api_reference_lists_the_vocabulary() -> None:
    api = (PACKAGE.parent / "docs" / "api.md").read_text(encoding="utf-8")
    missing = [n for n in ratings.__all__ if f"### `ratings.{n}" not in api]
    assert missing == []
    assert "### `SessionQAEntry.best_answer`" in api
