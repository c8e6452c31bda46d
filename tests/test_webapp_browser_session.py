"""Rating a whole conversation in a real browser: the demo page's "Rate this conversation"
control and ``<feedback-buttons>`` aimed at a session.

Headless Debian chromium driven by Playwright, over ``create_demo_app`` served
with uvicorn on a free loopback port and a store in tmp_path (the set-up of
``tests/test_webapp_browser.py``, imported from there). Each test checks what
the page shows and what the store holds. Screenshot:
``tests/artifacts/webapp-session-rating.png``.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import test_webapp_browser as ui

from feedback_plugin import SessionStore

pytestmark = pytest.mark.slow  # a real browser: seconds per test

browser = ui.browser  # its chromium fixture (skipped, or failed under $CI, without chromium)
site = ui.site  # the demo app (offline responder) over the test's store, and a page on it
thumbs, ARTIFACTS = ui.thumbs, ui.ARTIFACTS


def rating_control(page: Any) -> Any:
    return page.locator("#session-rating")


def session_thumb(page: Any, which: str) -> Any:
    return rating_control(page).get_by_role("button", name=f"Thumbs {which}")


def test_rate_the_conversation_reload_change_and_clear(site: ui.Page, store: SessionStore) -> None:
    from playwright.sync_api import expect

    site.open()
    page = site.page
    control = rating_control(page)
    expect(control).to_be_hidden()  # nothing to rate before the first answer
    session_id = site.session_id

    msg = site.ask("How do I reset my password?")
    qa_id = msg.get_attribute("data-qa-id")
    assert qa_id
    expect(control).to_be_visible()
    expect(control.get_by_role("group")).to_have_attribute("aria-label", "Rate this conversation")
    up, down = session_thumb(page, "up"), session_thumb(page, "down")
    expect(up).to_have_attribute("aria-pressed", "false")
    expect(down).to_have_attribute("aria-pressed", "false")

    with page.expect_response("**/api/sessions/feedback?session_id=*") as answered:
        up.click()
    assert answered.value.request.method == "PUT" and answered.value.ok
    expect(up).to_have_attribute("aria-pressed", "true")
    rating = store.get_session_feedback(session_id)
    assert rating is not None and rating.feedback_score == 5
    # the conversation's rating is not the answer's
    expect(thumbs(msg, "up")).to_have_attribute("aria-pressed", "false")
    entry = store.get_entry(session_id, qa_id)
    assert entry is not None and entry.feedback_score is None
    expect(page.locator("#turns .rating")).to_have_text(["–"])

    site.reload()  # the state comes back from GET /api/sessions/feedback
    assert site.session_id == session_id
    expect(control).to_be_visible()
    expect(session_thumb(page, "up")).to_have_attribute("aria-pressed", "true")
    expect(session_thumb(page, "down")).to_have_attribute("aria-pressed", "false")

    # change it: 👎 opens the comment box, the comment is saved with it
    session_thumb(page, "down").click()
    expect(session_thumb(page, "down")).to_have_attribute("aria-pressed", "true")
    expect(session_thumb(page, "up")).to_have_attribute("aria-pressed", "false")
    box = control.get_by_role("textbox", name="Comment on this conversation")
    expect(box).to_be_visible()
    comment = "It kept sending me to the wrong settings page."
    box.fill(comment)
    control.get_by_role("button", name="Send").click()
    expect(box).to_be_hidden()
    expect(control.locator("feedback-buttons .saved")).to_have_text(f"Your comment: {comment}")
    rating = store.get_session_feedback(session_id)
    assert rating is not None and (rating.feedback_score, rating.feedback_text) == (1, comment)

    site.reload()
    expect(session_thumb(page, "down")).to_have_attribute("aria-pressed", "true")
    expect(control.locator("feedback-buttons .saved")).to_have_text(f"Your comment: {comment}")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "webapp-session-rating.png"))

    # clear it: click the pressed thumb; the comment stays
    session_thumb(page, "down").click()
    expect(session_thumb(page, "down")).to_have_attribute("aria-pressed", "false")
    expect(session_thumb(page, "up")).to_have_attribute("aria-pressed", "false")
    expect(control.locator("feedback-buttons .saved")).to_have_text(f"Your comment: {comment}")
    rating = store.get_session_feedback(session_id)
    assert rating is not None and (rating.feedback_score, rating.feedback_text) == (None, comment)
    site.reload()
    expect(session_thumb(page, "up")).to_have_attribute("aria-pressed", "false")
    expect(session_thumb(page, "down")).to_have_attribute("aria-pressed", "false")

    # a new session starts unrated; the old one keeps its comment
    page.get_by_role("button", name="New session").click()
    expect(page.locator(".empty")).to_be_visible()
    expect(control).to_be_hidden()
    site.ask("Where can I download my invoices?")
    expect(control).to_be_visible()
    expect(session_thumb(page, "up")).to_have_attribute("aria-pressed", "false")
    expect(control.locator("feedback-buttons .saved")).to_be_hidden()
    assert store.get_session_feedback(site.session_id) is None
    kept = store.get_session_feedback(session_id)
    assert kept is not None and kept.feedback_text == comment


def test_feedback_buttons_with_a_session_id_and_no_qa_id_rate_the_session(
    site: ui.Page, store: SessionStore
) -> None:
    """The component on its own: ``session-id`` without ``qa-id`` targets the session;
    ``refresh()`` reads its rating, a click changes it, events say ``target: "session"``,
    and a failed request (a session without turns) changes nothing."""
    from playwright.sync_api import expect

    store.record("elsewhere", "q", "a", wait=True)
    store.session_thumbs("elsewhere", up=False)
    site.open()
    page = site.page
    page.evaluate(
        """() => {
        window.seen = [];
        document.addEventListener('feedback-change', (e) => window.seen.push(
            [e.detail.target, e.detail.qaId, e.detail.sessionId, e.detail.thumbs]));
        document.addEventListener('feedback-error', (e) => window.seen.push(
            ['error', e.detail.target, String(e.detail.error.message)]));
        for (const id of ['elsewhere', 'no-such-session']) {
            const b = document.createElement('feedback-buttons');
            b.setAttribute('session-id', id);
            b.id = 'fb-' + id;
            document.querySelector('#messages').append(b);
        }
        }"""
    )
    buttons = page.locator("#fb-elsewhere")
    assert page.evaluate("document.querySelector('#fb-elsewhere').target") == "session"
    page.evaluate("document.querySelector('#fb-elsewhere').refresh()")
    down = buttons.get_by_role("button", name="Thumbs down")
    expect(down).to_have_attribute("aria-pressed", "true")

    buttons.get_by_role("button", name="Thumbs up").click()
    expect(buttons.get_by_role("button", name="Thumbs up")).to_have_attribute(
        "aria-pressed", "true"
    )
    rating = store.get_session_feedback("elsewhere")
    assert rating is not None and rating.feedback_score == 5
    assert page.evaluate("window.seen") == [["session", None, "elsewhere", "up"]]

    missing = page.locator("#fb-no-such-session")
    missing.get_by_role("button", name="Thumbs up").click()
    expect(missing.locator("[part=status]")).to_contain_text("Not saved (HTTP 404")
    expect(missing.get_by_role("button", name="Thumbs up")).to_have_attribute(
        "aria-pressed", "false"
    )
    assert page.evaluate("window.seen")[-1][:2] == ["error", "session"]
    assert store.get_session("no-such-session") == []
    site.errors[:] = [e for e in site.errors if "404" not in e]  # the browser logs the 404
