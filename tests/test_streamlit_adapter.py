"""The Streamlit adapter, driven by a real ``st.feedback`` widget under ``AppTest``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("streamlit")

from streamlit.testing.v1 import AppTest

from feedback_plugin import InvalidFeedbackError, SessionStore
from feedback_plugin.integrations.streamlit_feedback import (
    feedback_widget,
    record_st_feedback,
    widget_value_for,
)


def _turn(store: SessionStore, session_id: str = "s1", user: str | None = None) -> str:
    return store.record(session_id, "How do I reset my password?", "Settings.", user=user).qa_id


def _rating(store: SessionStore, qa_id: str, session_id: str = "s1", user: str | None = None):
    entry = store.get_entry(session_id, qa_id, user=user)
    assert entry is not None
    return entry.feedback_score, entry.feedback_text


# -- the value mapping ---------------------------------------------------------------


@pytest.mark.parametrize(("value", "score"), [(0, 1), (1, 5)])
def test_thumbs_values(store: SessionStore, value: int, score: int) -> None:
    qa_id = _turn(store)
    assert record_st_feedback(store, "s1", qa_id, value) is True
    assert _rating(store, qa_id) == (score, None)


@pytest.mark.parametrize("kind", ["stars", "faces"])
@pytest.mark.parametrize("value", [0, 1, 2, 3, 4])
def test_stars_and_faces_map_0_4_to_scores_1_5(store: SessionStore, kind: Any, value: int) -> None:
    qa_id = _turn(store)
    assert record_st_feedback(store, "s1", qa_id, value, kind=kind) is True
    assert _rating(store, qa_id) == (value + 1, None)


def test_none_clears_rating_and_comment(store: SessionStore) -> None:
    qa_id = _turn(store)
    record_st_feedback(store, "s1", qa_id, 0, text="wrong menu")
    assert _rating(store, qa_id) == (1, "wrong menu")
    assert record_st_feedback(store, "s1", qa_id, None) is True
    assert _rating(store, qa_id) == (None, None)
    assert store.get_entry("s1", qa_id) is not None  # the turn itself stays


def test_comment_goes_with_the_rating(store: SessionStore) -> None:
    qa_id = _turn(store)
    record_st_feedback(store, "s1", qa_id, 4, kind="stars", text="spot on")
    assert _rating(store, qa_id) == (5, "spot on")


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("thumbs", 2),
        ("thumbs", -1),
        ("thumbs", True),
        ("thumbs", 1.0),
        ("thumbs", "1"),
        ("stars", 5),
        ("faces", -1),
        ("stars", False),
    ],
)
def test_values_the_widget_cannot_produce_are_refused(
    store: SessionStore, kind: Any, value: Any
) -> None:
    qa_id = _turn(store)
    record_st_feedback(store, "s1", qa_id, 1)
    with pytest.raises(InvalidFeedbackError):
        record_st_feedback(store, "s1", qa_id, value, kind=kind)
    assert _rating(store, qa_id) == (5, None)  # nothing changed


def test_unknown_kind_is_a_value_error(store: SessionStore) -> None:
    qa_id = _turn(store)
    with pytest.raises(ValueError, match="kind"):
        record_st_feedback(store, "s1", qa_id, 1, kind="hearts")  # type: ignore[arg-type]


def test_unknown_turn_and_other_users_turn_give_false(store: SessionStore) -> None:
    qa_id = _turn(store, user="alice")
    assert record_st_feedback(store, "s1", "no-such-turn", 1, user="alice") is False
    assert record_st_feedback(store, "s1", qa_id, 1, user="bob") is False
    assert record_st_feedback(store, "s1", qa_id, 1) is False
    assert _rating(store, qa_id, user="alice") == (None, None)
    assert record_st_feedback(store, "s1", qa_id, 1, user="alice") is True
    assert _rating(store, qa_id, user="alice") == (5, None)


def test_widget_value_for_inverts_the_mapping() -> None:
    assert [widget_value_for(s) for s in (None, 1, 2, 3, 4, 5)] == [None, 0, 0, None, 1, 1]
    assert [widget_value_for(s, "stars") for s in (1, 2, 3, 4, 5)] == [0, 1, 2, 3, 4]
    assert widget_value_for(None, "faces") is None


# -- the widget, in a real Streamlit script run ----------------------------------------


def _chat_app(store, session_id, kind, user):  # type: ignore[no-untyped-def]
    """A tiny chat page: each answer with a feedback widget under it.

    AppTest runs this function's source as a script: no annotations (no imports).
    """
    import streamlit as st

    from feedback_plugin.integrations.streamlit_feedback import feedback_widget

    for entry in store.get_session(session_id, user=user):
        with st.chat_message("user"):
            st.write(entry.question)
        with st.chat_message("assistant"):
            st.write(entry.answer)
            value = feedback_widget(store, session_id, entry.qa_id, kind=kind, user=user)
            st.caption(f"value={value}")


def _app(store: SessionStore, kind: str = "thumbs", user: Any = None) -> AppTest:
    at = AppTest.from_function(_chat_app, args=(store, "s1", kind, user), default_timeout=10)
    return at.run()


def test_thumbs_widget_writes_every_change(store: SessionStore) -> None:
    first, second = _turn(store), _turn(store)
    at = _app(store)
    assert not at.exception
    assert len(at.feedback) == 2
    assert [w.value for w in at.feedback] == [None, None]

    at.feedback[1].set_value(1).run()
    assert not at.exception
    assert _rating(store, second) == (5, None)
    assert _rating(store, first) == (None, None)

    at.feedback[1].set_value(0).run()
    assert _rating(store, second) == (1, None)

    at.feedback[0].set_value(1).run()
    assert _rating(store, first) == (5, None)
    assert _rating(store, second) == (1, None)

    at.feedback[1].set_value(None).run()  # clicking the selected thumb again clears it
    assert _rating(store, second) == (None, None)
    assert [c.value for c in at.caption] == ["value=1", "value=None"]


def test_rerun_without_a_click_writes_nothing(store: SessionStore) -> None:
    qa_id = _turn(store)
    at = _app(store)
    at.feedback[0].set_value(1).run()
    entry = store.get_entry("s1", qa_id)
    assert entry is not None and entry.feedback_time is not None
    at.run()
    at.run()
    again = store.get_entry("s1", qa_id)
    assert again is not None and again.feedback_time == entry.feedback_time


@pytest.mark.parametrize("kind", ["stars", "faces"])
def test_stars_and_faces_widgets(store: SessionStore, kind: str) -> None:
    qa_id = _turn(store)
    at = _app(store, kind=kind)
    at.feedback[0].set_value(3).run()
    assert not at.exception
    assert _rating(store, qa_id) == (4, None)
    at.feedback[0].set_value(0).run()
    assert _rating(store, qa_id) == (1, None)


def test_a_new_browser_session_shows_the_stored_rating(store: SessionStore) -> None:
    up, down = _turn(store), _turn(store)
    _turn(store)  # unrated
    store.thumbs("s1", up, True)
    store.thumbs("s1", down, False)
    at = _app(store)  # a fresh AppTest is a fresh session
    assert [w.value for w in at.feedback] == [1, 0, None]
    stars = _app(store, kind="stars")
    assert [w.value for w in stars.feedback] == [4, 0, None]


@pytest.mark.slow
def test_widget_is_scoped_to_the_user(store: SessionStore) -> None:
    qa_id = _turn(store, user="alice")
    at = _app(store, user="alice")
    at.feedback[0].set_value(1).run()
    assert not at.exception
    assert _rating(store, qa_id, user="alice") == (5, None)
    assert _app(store, user="bob").feedback.len == 0  # bob sees no turns


def test_widget_on_a_missing_turn_does_not_break_the_page(store: SessionStore) -> None:
    def app(store):  # type: ignore[no-untyped-def]
        from feedback_plugin.integrations.streamlit_feedback import feedback_widget

        feedback_widget(store, "s1", "gone")

    at = AppTest.from_function(app, args=(store,), default_timeout=10).run()
    at.feedback[0].set_value(1).run()
    assert not at.exception
    assert store.get_session("s1") == []


def test_feedback_widget_checks_its_arguments(store: SessionStore) -> None:
    with pytest.raises(ValueError, match="kind"):
        feedback_widget(store, "s1", "q", kind="hearts")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        feedback_widget(store, "", "q")


# -- the example app ------------------------------------------------------------------------------


@pytest.mark.slow
def test_example_app_chat_rate_and_reload(_default_dir: Path) -> None:
    """examples/streamlit_app.py: ask, rate, reload (a new session with the same URL)."""
    import streamlit as st

    script = str(Path(__file__).resolve().parents[1] / "examples" / "streamlit_app.py")
    at = AppTest.from_file(script, default_timeout=30)
    at.query_params["session"] = "st-test"
    at.run()
    assert not at.exception
    at.chat_input[0].set_value("How do I reset my password?").run()
    assert not at.exception
    assert len(at.feedback) == 1
    at.feedback[0].set_value(1).run()
    at.chat_input[0].set_value("Can I export my notes as a PDF?").run()
    at.feedback[1].set_value(0).run()
    assert not at.exception

    reloaded = AppTest.from_file(script, default_timeout=30)
    reloaded.query_params["session"] = "st-test"
    reloaded.run()
    assert [w.value for w in reloaded.feedback] == [1, 0]  # ratings kept across sessions
    reloaded.sidebar.radio[0].set_value("stars").run()
    assert [w.value for w in reloaded.feedback] == [4, 0]  # score 5 -> 5 stars

    store = SessionStore(_default_dir)
    try:
        entries = store.get_session("st-test")
        assert [e.feedback_score for e in entries] == [5, 1]
        assert "Reset password" in entries[0].answer and entries[0].context
    finally:
        store.close()
        st.cache_resource.clear()
