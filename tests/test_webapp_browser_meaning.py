"""The demo chat page finds a liked answer by meaning: headless chromium, as in
``tests/test_webapp_browser.py`` (whose browser, server and page helpers this uses).

Like an answer, ask the same thing in other words (no word in common): the
offline responder reuses the liked answer, and the page says the memory was
found by meaning -- under the answer and in *Memories used*, before and after a
reload. The app's embeddings are the concept fake of ``tests/_concepts.py``
(instant and deterministic, so the test runs whether or not the ``semantic``
extra is installed; the real model's run of the same flow, without a browser,
is ``tests/test_webapp.py::test_the_local_model_finds_a_paraphrase_and_not_another_topic``).
A screenshot goes to ``tests/artifacts/webapp-meaning.png``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("numpy")  # vectors of memory by meaning

import test_webapp_browser as ui
from _concepts import ConceptEmbeddings

from feedback_plugin import SessionStore
from feedback_plugin.integrations.offline_model import LIKED_PREFIX
from feedback_plugin.integrations.webapp import create_demo_app

pytestmark = pytest.mark.slow  # a real browser: seconds

browser = ui.browser  # its chromium fixture (skipped, or failed under $CI, without chromium)

PASSWORD_Q = "How do I reset my password?"
PARAPHRASE_Q = "I forgot my login credentials, what now?"  # no word in common with it
BY_MEANING = "reuses an answer you liked · found by meaning"


def test_a_paraphrase_finds_the_liked_answer_by_meaning(browser: Any, store: SessionStore) -> None:
    from playwright.sync_api import expect

    with ui.serve(create_demo_app(store, embeddings=ConceptEmbeddings())) as base:
        site = ui.Page(browser, base)
        try:
            site.open()
            page = site.page
            search = page.locator("#memory-search")  # how memory is searched, from /api/info
            expect(search).to_have_attribute("data-mode", "meaning")
            expect(search).to_have_text("memory found by meaning: concepts-v1")

            liked = site.ask(PASSWORD_Q)
            answer = liked.locator(".answer").inner_text()
            assert answer.startswith("Go to Settings > Account > Security")
            ui.thumbs(liked, "up").click()
            expect(ui.thumbs(liked, "up")).to_have_attribute("aria-pressed", "true")
            assert store.memory.wait_embedded(10)  # the liked turn has its vector

            again = site.ask(PARAPHRASE_Q)
            expect(again.locator(".answer")).to_have_text(LIKED_PREFIX + answer)
            expect(again.locator(".memory-note")).to_have_text(BY_MEANING)
            memories = page.locator("#memories .memory")
            expect(memories).to_have_count(1)
            expect(memories.locator(".mq")).to_contain_text(PASSWORD_Q)
            expect(memories.locator(".mm")).to_have_text("this session")
            how = memories.locator(".mf")
            expect(how).to_have_attribute("data-found-by", "meaning")
            expect(how).to_have_text(re.compile(r"^found by meaning · similarity 0\.\d\d$"))
            shown = how.inner_text()

            site.reload()  # the turn's recorded context keeps how its memory was found
            expect(page.locator(".msg.bot .memory-note")).to_have_text([BY_MEANING])
            expect(memories.locator(".mf")).to_have_text(shown)
            page.locator("#turns .turn").nth(0).click()  # the first answer used no memory
            expect(page.locator("#memories .none")).to_contain_text("None matched")

            ui.ARTIFACTS.mkdir(exist_ok=True)
            page.locator("#turns .turn").nth(1).click()
            expect(memories.locator(".mf")).to_have_text(shown)
            page.wait_for_timeout(300)  # let the status texts and scrolling settle
            page.screenshot(path=str(ui.ARTIFACTS / "webapp-meaning.png"))
            assert site.errors == [], site.errors
        finally:
            site.close()
