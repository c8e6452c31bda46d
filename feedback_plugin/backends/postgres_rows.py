"""What PostgreSQL cannot hold as given, and how the backend stores it anyway.

PostgreSQL text holds no U+0000 and no lone surrogate, and its ``jsonb``
also refuses a ``\\u0000`` escape and turns ``1e+20`` into an integer. The
store's contract is that every id and text round-trips exactly, so:

* an id (namespace, user, session, qa id) goes in as itself, unless it holds
  U+0000, a lone surrogate or starts with U+0001: then as U+0001 followed by
  its ASCII JSON string (injective: a plain id never starts with U+0001).
  No user (``None``) and no namespace are ``''`` (never a valid id).
* a payload goes into ``doc`` (jsonb) as is, unless jsonb would refuse or
  change it: then ``raw`` keeps the exact text and ``doc`` a copy jsonb can
  hold (U+0000 as a space, lone surrogates as "?", non-finite numbers as
  null), which memory searches. Reads return ``raw`` when there is one.

>>> enc_id("s1"), dec_id(enc_id("a\\x00b")) == "a\\x00b", enc_id(None)
('s1', True, '')
>>> split_payload('{"question":"hi"}')
('{"question":"hi"}', None)
>>> split_payload('{"question":"a\\\\u0000b"}')
('{"question": "a b"}', '{"question":"a\\\\u0000b"}')
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["dec_id", "enc_id", "jsonb_safe", "split_payload"]

_ESCAPED = "\x01"


def _plain(text: str) -> bool:
    if "\x00" in text or text.startswith(_ESCAPED):
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def enc_id(value: str | None) -> str:
    """An id as stored in a text column (``None``: ``''``)."""
    if value is None:
        return ""
    return value if _plain(value) else _ESCAPED + json.dumps(value)


def dec_id(stored: str) -> str | None:
    """The id :func:`enc_id` stored (``''``: ``None``)."""
    if not stored:
        return None
    return json.loads(stored[1:]) if stored.startswith(_ESCAPED) else stored


# \u0000, a surrogate escape (a lone one is refused; a pair is fine but rare: kept
# exact), a number in exponent form (a value: after ':', ',' or '['), NaN / Infinity
# (json's, not JSON's). Text inside a string may match too: only a false alarm.
_UNSAFE = re.compile(r"\\u0000|\\u[dD][89a-fA-F]|[:,\[]\s*-?[0-9]+(?:\.[0-9]+)?[eE]|NaN|Infinity")


def jsonb_safe(text: str) -> bool:
    """Whether jsonb holds this JSON text without refusing or changing it (no false
    ``True``; a rare false ``False`` only costs the exact copy)."""
    return _UNSAFE.search(text) is None


def split_payload(payload: str) -> tuple[str, str | None]:
    """``(doc, raw)``: the jsonb text to store, and the exact payload when it differs."""
    if jsonb_safe(payload):
        return payload, None
    try:
        value = json.loads(payload)
    except ValueError:
        value = None  # not JSON: kept exactly in raw; doc says nothing
    return json.dumps(_clean(value), ensure_ascii=False, allow_nan=False), payload


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", " ").encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value
