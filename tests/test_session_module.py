"""feedback_plugin.session: the module-level API over the store at $FEEDBACK_PLUGIN_DIR."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedback_plugin import InvalidFeedbackError, SessionStore, session


@pytest.fixture(autouse=True)
def _close_default_store(_default_dir: Path) -> Iterator[None]:
    """Release the default store this test opened (the env var is still set here)."""
    yield
    session.default_store().close()


def on_disk(path: Path, session_id: str, user: str | None = None) -> list[tuple[str, int | None]]:
    with SessionStore(path) as s:
        return [(e.qa_id, e.feedback_score) for e in s.get_session(session_id, user=user)]


def test_default_store_lives_in_feedback_plugin_dir(_default_dir: Path) -> None:
    assert not _default_dir.exists()
    assert session.get_session("s1") == []
    e = session.record("s1", "q", "a", ["ctx"])
    assert session.get_session("s1") == [e]
    session.default_store().flush()
    assert _default_dir.is_dir()
    assert on_disk(_default_dir, "s1") == [(e.qa_id, None)]
    assert session.default_store() is session.default_store()


def test_module_functions_follow_the_contract(_default_dir: Path) -> None:
    a = session.record("s1", "q1", "a1")
    b = session.record("s1", "q2", "a2", qa_id="fixed-id", metadata={"model": "m"})
    assert b.qa_id == "fixed-id"
    assert session.add_feedback("s1", a.qa_id, "fine", 4) is True
    assert session.thumbs("s1", b.qa_id, up=False, feedback_text="wrong") is True
    got = session.get_session("s1")
    assert [(e.feedback_text, e.feedback_score) for e in got] == [("fine", 4), ("wrong", 1)]
    assert got[1].metadata == {"model": "m"}
    assert [e.qa_id for e in session.get_session("s1", last_n=1)] == [b.qa_id]
    assert session.add_feedback("s1", a.qa_id, feedback_score=2) is True
    assert session.get_session("s1")[0].feedback_text == "fine"  # text kept
    assert session.delete_feedback("s1", a.qa_id) is True
    assert session.get_session("s1")[0].feedback_score is None
    assert len(session.get_session("s1")) == 2  # the turn stays
    assert session.add_feedback("s1", "missing", "x", 3) is False
    assert session.add_feedback("other", a.qa_id, "x", 3) is False
    assert session.thumbs("s1", "missing", up=True) is False
    assert session.delete_feedback("s1", "missing") is False
    session.default_store().flush()
    assert on_disk(_default_dir, "s1") == [(a.qa_id, None), (b.qa_id, 1)]


@pytest.mark.parametrize("bad", [0, 6, -1, 3.5, True, "5"])
def test_bad_scores_raise_and_change_nothing(bad: object) -> None:
    e = session.record("s1", "q", "a")
    assert session.add_feedback("s1", e.qa_id, "keep", 3)
    before = session.get_session("s1")
    with pytest.raises(InvalidFeedbackError):
        session.add_feedback("s1", e.qa_id, "new", bad)  # type: ignore[arg-type]
    assert session.get_session("s1") == before


def test_bad_input_raises() -> None:
    e = session.record("s1", "q", "a")
    with pytest.raises(InvalidFeedbackError):
        session.add_feedback("s1", e.qa_id)
    with pytest.raises(ValueError):
        session.get_session("")
    with pytest.raises(ValueError):
        session.add_feedback("", e.qa_id, "t", 4)
    with pytest.raises(ValueError):
        session.record("", "q", "a")


def test_user_scoping() -> None:
    e = session.record("s1", "q", "a", user="alice")
    assert session.get_session("s1") == []
    assert session.get_session("s1", user="bob") == []
    assert session.add_feedback("s1", e.qa_id, "x", 1, user="bob") is False
    assert session.delete_feedback("s1", e.qa_id) is False
    assert session.thumbs("s1", e.qa_id, up=True, user="alice") is True
    assert session.get_session("s1", user="alice")[0].feedback_score == 5


def test_changing_the_env_var_switches_store(
    _default_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = session.record("s1", "q", "in first")
    first_store = session.default_store()
    second_dir = tmp_path / "second-store"
    monkeypatch.setenv("FEEDBACK_PLUGIN_DIR", str(second_dir))
    try:
        assert session.default_store() is not first_store
        assert session.get_session("s1") == []
        assert session.add_feedback("s1", first.qa_id, "x", 5) is False
        second = session.record("s1", "q", "in second")
        assert session.get_session("s1") == [second]
        session.default_store().flush()
        assert on_disk(second_dir, "s1") == [(second.qa_id, None)]
    finally:
        session.default_store().close()
        monkeypatch.setenv("FEEDBACK_PLUGIN_DIR", str(_default_dir))
    assert session.default_store() is first_store
    assert session.get_session("s1") == [first]
    first_store.flush()
    assert on_disk(_default_dir, "s1") == [(first.qa_id, None)]


# -- the façade mirrors the store, both ways ---------------------------------------------

MIRRORED = [n for n in session.__all__ if n != "default_store"]


def _claimed_method(fn_name: str) -> str:
    """The store method a module function says it is ("See :meth:`SessionStore.x`.")."""
    doc = inspect.getdoc(getattr(session, fn_name)) or ""
    match = re.fullmatch(r"See :meth:`SessionStore\.(\w+)`\.", doc)
    assert match, f"session.{fn_name} does not say which SessionStore method it mirrors"
    return match.group(1)


def test_every_mirrored_function_names_an_existing_store_method_of_its_name() -> None:
    assert MIRRORED  # the façade has functions
    for name in MIRRORED:
        method = _claimed_method(name)
        assert method == name, f"session.{name} claims to mirror SessionStore.{method}"
        assert callable(getattr(SessionStore, method, None)), f"SessionStore.{method} is gone"


@pytest.mark.parametrize("name", MIRRORED)
def test_module_function_signature_equals_the_store_method(name: str) -> None:
    """Same parameters in the same order, each with the same kind, default and annotation:
    a parameter added to the store (``correction``, ``wait``) and not to the façade fails,
    and so does one the façade has that the store lacks."""
    mine = inspect.signature(getattr(session, name))
    theirs = inspect.signature(getattr(SessionStore, name))
    store_params = [p for p in theirs.parameters.values() if p.name != "self"]

    def shape(params: list[inspect.Parameter]) -> list[tuple[str, object, object, object]]:
        return [(p.name, p.kind, p.default, p.annotation) for p in params]

    assert shape(list(mine.parameters.values())) == shape(store_params)
    assert mine.return_annotation == theirs.return_annotation
