"""The demo chat page in a real browser: headless Debian chromium driven by Playwright.

Each test serves ``create_demo_app`` with uvicorn on a free 127.0.0.1 port
(a background thread) over a store in tmp_path, and checks both what the page
shows and what the store holds. A screenshot of a rated session with memories
goes to ``tests/artifacts/webapp.png``.

Needs ``playwright`` (the dev extra) and ``/usr/bin/chromium`` (``apt-get
install chromium``; ``scripts/test.sh`` installs it when run as root).
Playwright's own browser download is not used. Without them the tests are
skipped, or fail when ``$CI`` is set. ``$FEEDBACK_PLUGIN_CHROMIUM`` names
another chromium binary.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from _fakes import ScriptedChatModel, tool_call  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from feedback_plugin import SessionStore  # noqa: E402
from feedback_plugin.embeddings import is_available  # noqa: E402
from feedback_plugin.integrations.demo.content import ENV_EMBEDDINGS  # noqa: E402
from feedback_plugin.integrations.offline_model import HELP_TOOL, OfflineChatModel  # noqa: E402
from feedback_plugin.integrations.webapp import create_demo_app  # noqa: E402

pytestmark = pytest.mark.slow  # a real browser: seconds per test

CHROMIUM = os.environ.get("FEEDBACK_PLUGIN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SESSION_KEY = "feedback_plugin.demo.session"
TIMEOUT_MS = 15_000

XSS_ANSWER = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
XSS_QUESTION = '<img src=y onerror="window.__xss=3"> <b>bold</b> password?'


def _unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return (
            f"no chromium at {CHROMIUM}: install Debian's chromium (apt-get install -y "
            "chromium; scripts/test.sh does this when run as root) or set "
            "FEEDBACK_PLUGIN_CHROMIUM"
        )
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test cannot run: {reason}", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread on a free loopback port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


class Page:
    """A Playwright page plus the console / JS errors it produced."""

    def __init__(self, browser: Any, base: str, **context: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1360, "height": 900}, **context)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.base = base
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on(
            "console",
            lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
        )

    def open(self) -> None:
        self.page.goto(self.base + "/")
        self.ready()

    def reload(self) -> None:
        self.page.reload()
        self.ready()

    def ready(self) -> None:
        from playwright.sync_api import expect

        expect(self.page.locator("body")).to_have_attribute("data-ready", "true")

    @property
    def session_id(self) -> str:
        value = self.page.evaluate(f"localStorage.getItem({SESSION_KEY!r})")
        assert isinstance(value, str) and value
        return value

    def ask(self, question: str) -> Any:
        """Type a question, press Enter, wait for the answer; return its message locator."""
        from playwright.sync_api import expect

        answers = self.page.locator(".msg.bot[data-qa-id]")
        before = answers.count()
        self.page.locator("#question").fill(question)
        self.page.locator("#question").press("Enter")
        expect(answers).to_have_count(before + 1)
        expect(self.page.locator("#question")).to_be_enabled()
        return answers.nth(before)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def site(browser: Any, store: SessionStore) -> Iterator[Page]:
    """The demo app (offline responder) served over ``store``, and a fresh page on it."""
    with serve(create_demo_app(store)) as base:
        p = Page(browser, base)
        try:
            yield p
            assert p.errors == [], p.errors
        finally:
            p.close()


def thumbs(msg: Any, which: str) -> Any:
    return msg.get_by_role("button", name=f"Thumbs {which}")


class SlowOfflineModel(OfflineChatModel):
    """The offline responder's model, writing its answer slowly (to watch it stream)."""

    async def _astream(self, *args: Any, **kwargs: Any) -> Any:
        async for chunk in super()._astream(*args, **kwargs):
            await asyncio.sleep(0.08)
            yield chunk


# -- tests -------------------------------------------------------------------------------


def test_the_agent_streams_the_answer_under_its_thumbs_and_a_click_is_stored(
    browser: Any, store: SessionStore
) -> None:
    """The page asks the agent over POST /api/chat/stream: the answer's message and its
    buttons appear with the qa_id, the words follow, then the sources; 👍 is stored."""
    from playwright.sync_api import expect

    with serve(create_demo_app(store, chat_model=SlowOfflineModel())) as base:
        site = Page(browser, base)
        try:
            site.open()
            page = site.page
            with page.expect_response("**/api/chat/stream") as streamed:
                page.locator("#question").fill("How do I reset my password?")
                page.locator("#question").press("Enter")
                msg = page.locator(".msg.bot.streaming[data-qa-id]")
                # while the answer is written: its buttons are there already, waiting
                expect(msg.locator("feedback-buttons")).to_have_attribute("inert", "")
                expect(msg.locator(".answer")).to_contain_text("Settings")
                expect(msg.locator(".sources")).to_have_count(0)
            expect(page.locator(".msg.bot.streaming")).to_have_count(0)  # written
            msg = page.locator(".msg.bot[data-qa-id]")
            expect(msg.locator(".answer")).to_have_text(
                "Go to Settings > Account > Security and click Reset password. We'll e-mail "
                "you a link that stays valid for 30 minutes. If you sign in with Google or "
                "Apple, change the password with them instead."
            )
            expect(msg.locator(".sources").first).to_contain_text("Resetting your password")
            expect(msg.locator("feedback-buttons")).not_to_have_attribute("inert", "")
            response = streamed.value  # (its body went to the page's reader, not to us)
            assert response.ok and response.request.method == "POST"
            assert response.headers["content-type"].startswith("application/x-ndjson")
            qa_id = msg.get_attribute("data-qa-id")
            assert qa_id

            up = thumbs(msg, "up")
            up.click()
            expect(up).to_have_attribute("aria-pressed", "true")
            expect(page.locator("#turns .rating")).to_have_text(["👍"])
            entry = store.get_entry(site.session_id, qa_id)
            assert entry is not None and entry.feedback_score == 5
            assert entry.question == "How do I reset my password?"
            assert entry.context[0].startswith("Resetting your password.")

            site.reload()  # the stored turn, its rating and its sources come back
            msg = page.locator(f'.msg.bot[data-qa-id="{qa_id}"]')
            expect(thumbs(msg, "up")).to_have_attribute("aria-pressed", "true")
            expect(msg.locator(".sources").first).to_contain_text("Resetting your password")
            assert site.errors == [], site.errors
        finally:
            site.close()


def test_an_agent_failure_mid_stream_shows_an_error_and_no_turn(
    browser: Any, store: SessionStore
) -> None:
    from playwright.sync_api import expect

    def broken(_: Any) -> str:
        raise RuntimeError("model down")

    search = tool_call(HELP_TOOL, {"query": "password"})
    model = ScriptedChatModel(script=[search, broken], cycle=True)
    with serve(create_demo_app(store, chat_model=model)) as base:
        site = Page(browser, base)
        try:
            site.open()
            page = site.page
            page.locator("#question").fill("How do I reset my password?")
            page.locator("#question").press("Enter")
            error = page.locator(".msg.bot.error .bubble")
            expect(error).to_contain_text("the chat model could not answer")
            expect(page.locator(".msg.bot[data-qa-id]")).to_have_count(0)
            expect(page.locator("#messages feedback-buttons")).to_have_count(0)
            expect(page.locator("#session-rating")).to_be_hidden()  # no turn: nothing to rate
            expect(page.locator("#turns .turn")).to_have_count(0)
            expect(page.locator("#question")).to_be_enabled()
            assert store.get_session(site.session_id) == []
            assert site.errors == [], site.errors
        finally:
            site.close()


def test_ask_thumbs_up_reload_keeps_the_rating(site: Page, store: SessionStore) -> None:
    from playwright.sync_api import expect

    site.open()
    page = site.page
    expect(page.locator("#responder")).to_have_text("offline responder")
    expect(page.locator(".empty")).to_be_visible()
    # how memory is found, as GET /api/info says: by meaning with the semantic extra
    meaning = is_available() and os.environ.get(ENV_EMBEDDINGS, "").strip().lower() != "off"
    search = page.locator("#memory-search")
    expect(search).to_have_attribute("data-mode", "meaning" if meaning else "words")
    expect(search).to_have_text(
        "memory found by meaning: all-MiniLM-L6-v2, on this machine"
        if meaning
        else "memory found by words (BM25)"
    )
    session_id = site.session_id

    msg = site.ask("How do I reset my password?")
    expect(msg.locator(".answer")).to_contain_text("Settings > Account > Security")
    expect(msg.locator(".badge")).to_have_text("offline responder")
    expect(msg.locator(".sources").first).to_contain_text("Resetting your password")
    qa_id = msg.get_attribute("data-qa-id")
    assert qa_id
    entry = store.get_entry(session_id, qa_id)
    assert entry is not None and entry.feedback_score is None

    up = thumbs(msg, "up")
    expect(up).to_have_attribute("aria-pressed", "false")
    up.click()
    expect(up).to_have_attribute("aria-pressed", "true")
    expect(thumbs(msg, "down")).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#turns .rating")).to_have_text(["👍"])
    entry = store.get_entry(session_id, qa_id)
    assert entry is not None and entry.feedback_score == 5

    site.reload()
    assert site.session_id == session_id
    msg = page.locator(f'.msg.bot[data-qa-id="{qa_id}"]')
    expect(msg.locator(".answer")).to_contain_text("Settings > Account > Security")
    expect(page.locator(".msg.user .bubble")).to_have_text(["How do I reset my password?"])
    expect(thumbs(msg, "up")).to_have_attribute("aria-pressed", "true")
    expect(thumbs(msg, "down")).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#turns .rating")).to_have_text(["👍"])
    expect(page.locator("#turns .q")).to_have_text(["How do I reset my password?"])

    # "New session" starts over; the old session stays in the store
    page.get_by_role("button", name="New session").click()
    expect(page.locator(".empty")).to_be_visible()
    assert site.session_id != session_id
    assert [e.qa_id for e in store.get_session(session_id)] == [qa_id]


def test_thumbs_down_with_a_comment(site: Page, store: SessionStore) -> None:
    from playwright.sync_api import expect

    site.open()
    page = site.page
    site.ask("How do I reset my password?")
    msg = site.ask("Can I export my notes as a PDF?")
    qa_id = msg.get_attribute("data-qa-id")
    assert qa_id

    down = thumbs(msg, "down")
    down.click()
    expect(down).to_have_attribute("aria-pressed", "true")
    box = msg.get_by_role("textbox", name="Comment on this answer")
    expect(box).to_be_visible()  # opens by itself after 👎
    comment = "It didn't say that PDF export needs the Pro plan."
    box.fill(comment)
    msg.get_by_role("button", name="Send").click()
    expect(box).to_be_hidden()
    expect(msg.locator("feedback-buttons .saved")).to_have_text(f"Your comment: {comment}")
    expect(page.locator("#turns .rating")).to_have_text(["–", "👎"])
    expect(page.locator("#turns .c")).to_have_count(1)

    entry = store.get_entry(site.session_id, qa_id)
    assert entry is not None
    assert (entry.feedback_score, entry.feedback_text) == (1, comment)
    first = store.get_session(site.session_id)[0]
    assert first.feedback_score is None and first.feedback_text is None

    site.reload()
    msg = page.locator(f'.msg.bot[data-qa-id="{qa_id}"]')
    expect(thumbs(msg, "down")).to_have_attribute("aria-pressed", "true")
    expect(msg.locator("feedback-buttons .saved")).to_have_text(f"Your comment: {comment}")


def test_clicking_the_pressed_thumb_clears_it_and_keeps_the_comment(
    site: Page, store: SessionStore
) -> None:
    from playwright.sync_api import expect

    site.open()
    msg = site.ask("Where can I download my invoices?")
    qa_id = msg.get_attribute("data-qa-id")
    assert qa_id
    events: Any = site.page.evaluate_handle(
        """() => { const seen = [];
        document.addEventListener('feedback-change', (e) => seen.push(e.detail.thumbs));
        return seen; }"""
    )
    up, down = thumbs(msg, "up"), thumbs(msg, "down")
    up.click()
    expect(up).to_have_attribute("aria-pressed", "true")
    msg.get_by_role("button", name="Comment").click()
    msg.get_by_role("textbox", name="Comment on this answer").fill("clear and short")
    msg.get_by_role("button", name="Send").click()
    expect(msg.locator("feedback-buttons .saved")).to_be_visible()

    down.click()  # switch
    expect(down).to_have_attribute("aria-pressed", "true")
    expect(up).to_have_attribute("aria-pressed", "false")
    down.click()  # the pressed one again: cleared
    expect(down).to_have_attribute("aria-pressed", "false")
    expect(up).to_have_attribute("aria-pressed", "false")
    expect(site.page.locator("#turns .rating")).to_have_text(["–"])

    entry = store.get_entry(site.session_id, qa_id)
    assert entry is not None
    assert (entry.feedback_score, entry.feedback_text) == (None, "clear and short")
    assert events.json_value() == ["up", "up", "down", None]


def test_memories_panel_and_screenshot(site: Page, store: SessionStore) -> None:
    from playwright.sync_api import expect

    site.open()
    page = site.page
    liked = site.ask("How do I reset my password?")
    thumbs(liked, "up").click()
    expect(thumbs(liked, "up")).to_have_attribute("aria-pressed", "true")
    disliked = site.ask("Can I export my notes as a PDF?")
    thumbs(disliked, "down").click()
    disliked.get_by_role("textbox", name="Comment on this answer").fill(
        "Missing: PDF export needs the Pro plan."
    )
    disliked.get_by_role("button", name="Send").click()
    expect(disliked.locator("feedback-buttons .saved")).to_be_visible()
    expect(page.locator("#memories .none")).to_contain_text("None matched")

    again = site.ask("I forgot my password, how do I reset it?")
    expect(again.locator(".memory-note")).to_have_text("reuses an answer you liked")
    memories = page.locator("#memories .memory")
    expect(memories).to_have_count(1)
    expect(memories.locator(".mq")).to_contain_text("How do I reset my password?")
    expect(memories.locator(".mm")).to_have_text("this session")
    expect(page.locator("#turns .rating")).to_have_text(["👍", "👎", "–"])
    expect(page.locator("#turns .turn[aria-current='true'] .q")).to_have_text(
        "I forgot my password, how do I reset it?"
    )

    # selecting an earlier turn in the panel shows that answer's memories
    page.locator("#turns .turn").nth(0).click()
    expect(page.locator("#memories .none")).to_contain_text("None matched")
    page.locator("#turns .turn").nth(2).click()
    expect(memories).to_have_count(1)

    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(300)  # let the status texts and scrolling settle
    page.screenshot(path=str(ARTIFACTS / "webapp.png"))
    assert (ARTIFACTS / "webapp.png").stat().st_size > 10_000
    assert len(store.get_session(site.session_id)) == 3


def test_model_and_user_text_is_never_html(browser: Any, store: SessionStore) -> None:
    """An answer (and a question) full of markup shows as text and runs nothing.

    The page's Content-Security-Policy would block inline handlers anyway, so this
    context bypasses it: what is tested is that the page never builds HTML from text.
    """
    from playwright.sync_api import expect

    search = tool_call(HELP_TOOL, {"query": "password"})
    model = ScriptedChatModel(script=[search, XSS_ANSWER], cycle=True)
    app = create_demo_app(store, chat_model=model)
    with serve(app) as base:
        site = Page(browser, base, bypass_csp=True)
        try:
            site.open()
            page = site.page

            def nothing_ran() -> None:
                page.wait_for_load_state("networkidle")
                page.wait_for_timeout(200)
                assert page.evaluate("window.__xss") is None
                assert page.evaluate("document.querySelectorAll('img').length") == 0
                assert page.evaluate("document.querySelectorAll('script:not([src])').length") == 0
                assert page.evaluate("document.querySelectorAll('#messages b').length") == 0

            msg = site.ask(XSS_QUESTION)
            expect(msg.locator(".answer")).to_have_text(XSS_ANSWER)
            expect(page.locator(".msg.user .bubble")).to_have_text([XSS_QUESTION])
            expect(page.locator("#turns .q")).to_have_text([XSS_QUESTION])
            nothing_ran()

            thumbs(msg, "up").click()  # so the next question gets it as a memory
            expect(thumbs(msg, "up")).to_have_attribute("aria-pressed", "true")
            msg.get_by_role("button", name="Comment").click()
            msg.get_by_role("textbox", name="Comment on this answer").fill(XSS_ANSWER)
            msg.get_by_role("button", name="Send").click()
            expect(msg.locator("feedback-buttons .saved")).to_have_text(
                f"Your comment: {XSS_ANSWER}"
            )
            site.ask(XSS_QUESTION)
            memory = page.locator("#memories .memory")
            expect(memory).to_have_count(1)
            expect(memory.locator(".ma")).to_have_text(XSS_ANSWER)
            expect(memory.locator(".mq")).to_contain_text(XSS_QUESTION)
            nothing_ran()

            site.reload()  # the restored turns go through another rendering path
            expect(page.locator(".msg.bot .answer")).to_have_text([XSS_ANSWER, XSS_ANSWER])
            expect(page.locator(".msg.user .bubble")).to_have_text([XSS_QUESTION] * 2)
            nothing_ran()

            entry = store.get_session(site.session_id)[0]
            assert (entry.question, entry.answer) == (XSS_QUESTION, XSS_ANSWER)
            assert site.errors == [], site.errors
        finally:
            site.close()


def test_reload_shows_sources_and_memories_as_before(site: Page) -> None:
    """After a reload every answer keeps its sources line and its memories."""
    from playwright.sync_api import expect

    site.open()
    page = site.page
    liked = site.ask("How do I reset my password?")
    thumbs(liked, "up").click()
    expect(thumbs(liked, "up")).to_have_attribute("aria-pressed", "true")
    site.ask("Can I export my notes as a PDF?")
    again = site.ask("I forgot my password, how do I reset it?")
    expect(again.locator(".memory-note")).to_have_text("reuses an answer you liked")

    sources = page.locator(".msg.bot .sources:not(.memory-note)")
    before = sources.all_inner_texts()
    assert len(before) == 3 and all("Resetting" in t or "Export" in t for t in before), before
    memories = page.locator("#memories .memory")
    expect(memories).to_have_count(1)
    memory_before = memories.inner_text()

    site.reload()
    expect(sources).to_have_text(before)  # not "Sources: , ,"
    expect(page.locator(".msg.bot .memory-note")).to_have_text(["reuses an answer you liked"])
    expect(page.locator("#turns .turn[aria-current='true'] .q")).to_have_text(
        "I forgot my password, how do I reset it?"
    )
    expect(memories).to_have_count(1)
    assert memories.inner_text() == memory_before
    expect(memories.locator(".mm")).to_have_text("this session")
    page.locator("#turns .turn").nth(1).click()  # the export answer used no memory
    expect(page.locator("#memories .none")).to_contain_text("None matched")


def test_phone_layout(browser: Any, store: SessionStore) -> None:
    """On a 390 × 844 phone the header stays small and the input's hint is not cut."""
    from playwright.sync_api import expect

    with serve(create_demo_app(store)) as base:
        site = Page(browser, base)
        site.context.close()
        site.context = browser.new_context(
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
        )
        site.context.set_default_timeout(TIMEOUT_MS)
        site.page = site.context.new_page()
        try:
            site.open()
            page = site.page
            site.ask("How do I reset my password?")
            header = page.locator("header.top").bounding_box()
            assert header is not None and header["height"] < 0.12 * 844, header
            fits = page.evaluate(
                """() => {
                  const input = document.querySelector('#question');
                  const style = getComputedStyle(input);
                  const ctx = document.createElement('canvas').getContext('2d');
                  ctx.font = style.font;
                  const room = input.clientWidth - parseFloat(style.paddingLeft)
                    - parseFloat(style.paddingRight);
                  const box = input.getBoundingClientRect();
                  return {text: ctx.measureText(input.placeholder).width, room,
                          right: box.right, width: window.innerWidth};
                }"""
            )
            assert fits["text"] <= fits["room"], fits  # the whole hint shows
            assert fits["right"] <= fits["width"], fits
            assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways
            expect(page.locator("#question")).to_be_in_viewport()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "webapp-phone.png"))
            assert site.errors == [], site.errors
        finally:
            site.close()
