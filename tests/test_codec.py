"""The stored JSON layout has three codecs (feedback_plugin/codec.py); one property pins them.

For any turn, with ids and text full of what breaks codecs (quotes, backslashes,
NUL, non-ASCII, lone surrogates, and the very key markers the light parser
searches for), metadata, feedback and a correction:

* the writer's fast encoder (``encode_queued``, fed the tuple ``record_trusted``
  queues) writes exactly the text ``SessionQAEntry.to_json`` writes for the
  same turn;
* ``from_json(to_json(e)) == e``;
* analytics' fast parsers (``loads``, ``parse_light``, ``parse_light_time``)
  read the same values as a full ``json.loads``.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timezone
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from feedback_plugin import SessionQAEntry, codec
from feedback_plugin.codec import Fields

# Pieces that have broken (or could break) a codec: JSON syntax, escapes, NUL,
# non-ASCII, lone surrogates (UTF-8 cannot carry them), and the markers parse_light
# looks for, so that a value holding one must not fool it.
TRICKY = [
    '"', "\\", "\x00", "\n", "\u2028", "é", "日本", "😀", "\ud800", "\udfff",
    '{"qa_id":', ',"session_id":', ',"time":', ',"feedback_text":', '","feedback_text":1,"',
]  # fmt: skip
CHARS = st.characters(exclude_categories=())  # every code point, surrogates included
# A high surrogate followed by a low one is no lone surrogate: JSON reads "\ud800\udc00"
# as the one character it encodes (U+10000), so such a pair is split up here.
_PAIR = re.compile("([\ud800-\udbff])(?=[\udc00-\udfff])")
TEXT = st.lists(st.one_of(CHARS, st.sampled_from(TRICKY)), max_size=12).map(
    lambda parts: _PAIR.sub("\\1|", "".join(parts))
)
IDS = TEXT.filter(bool)
UTC_TIMES = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(timezone.utc)
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
QUEUED: st.SearchStrategy[Fields] = st.tuples(
    st.none() | IDS,  # user
    IDS,  # session_id
    IDS | st.integers(0, 2**128 - 1),  # qa_id: a string, or a run id's int
    TEXT,  # question
    TEXT,  # answer
    st.lists(TEXT, max_size=3).map(tuple),  # context
    st.floats(0, 7e9, allow_nan=False),  # time, a POSIX timestamp
    st.dictionaries(TEXT, JSON_VALUES, max_size=4),  # metadata
    st.lists(st.tuples(IDS, IDS), max_size=3).map(tuple),  # memory: (session_id, qa_id)
)
FEEDBACK = st.fixed_dictionaries(
    {
        "feedback_text": st.none() | TEXT,
        "feedback_score": st.none() | st.integers(1, 5),
        "feedback_time": st.none() | UTC_TIMES,
        "correction": st.none() | TEXT,
        "fed_outcomes": st.dictionaries(IDS, st.sampled_from(["negative", "positive"]), max_size=3),
        "session_feedback": st.none()
        | st.fixed_dictionaries(
            {
                "feedback_score": st.none() | st.integers(1, 5),
                "feedback_text": st.none() | TEXT,
                "feedback_time": UTC_TIMES,
            }
        ),
    }
)


def _entry(turn: Fields) -> SessionQAEntry:
    """The turn the writer's tuple stands for, built as a model."""
    user, session_id, qa_id, question, answer, context, when, metadata, memory = turn
    firsts: dict[str, str] = {}
    for sid, qa in memory:  # the first mention of a memory wins
        firsts.setdefault(qa, sid)
    return SessionQAEntry(
        memory_ids=list(firsts),
        memory_sessions=firsts,
        qa_id=str(uuid.UUID(int=qa_id)) if isinstance(qa_id, int) else qa_id,
        session_id=session_id,
        question=question,
        answer=answer,
        context=list(context),
        time=datetime.fromtimestamp(when, timezone.utc),
        user_id=user,
        metadata=metadata,
    )


def _same_as_full_parse(payload: str) -> None:
    full: dict[str, Any] = json.loads(payload)
    assert codec.loads(payload) == full
    light = codec.parse_light(payload)
    timed = codec.parse_light_time(payload)
    for key in ("session_id", "user_id", "feedback_text", "feedback_score", "feedback_time",
                "metadata", "correction", *codec.EXTENSIONS):  # fmt: skip
        assert light.get(key) == full.get(key), key
        assert timed.get(key) == full.get(key), key
    assert timed["time"] == full["time"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(turn=QUEUED, feedback=FEEDBACK)
# found by this test: a lone surrogate in a metadata *key* was written as U+FFFD by the
# model (silently) and made the writer drop the turn
@example(
    turn=(None, "s", 1, "q", "a", (), 0.0, {"\ud800": {"\udfff": ["\x00"]}}, ()),
    feedback={
        "feedback_text": None,
        "feedback_score": 5,
        "feedback_time": None,
        "correction": "é",
        "fed_outcomes": {},
        "session_feedback": None,
    },
)
def test_the_three_codecs_agree(turn: Fields, feedback: dict[str, Any]) -> None:
    recorded = _entry(turn)
    # the writer's fast encoder == the model's encoder, for what the writer gets
    key, qa_id, payload = codec.encode_queued(turn)
    assert (key, qa_id) == ((recorded.user_id, recorded.session_id), recorded.qa_id)
    assert payload == recorded.to_json()
    payload.encode("utf-8")  # always valid UTF-8, lone surrogates or not

    rated = SessionQAEntry.model_validate({**recorded.model_dump(), **feedback})
    for entry in (recorded, rated):
        text = entry.to_json()
        # the model's codec round-trips
        assert SessionQAEntry.from_json(text) == entry
        # analytics' fast parsers read what the full parse reads
        _same_as_full_parse(text)
