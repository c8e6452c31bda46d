"""The Redis backend's key encoding and its Lua scripts (see :mod:`.redis` for the keys).

Appends, reads and session deletes run as scripts: atomic, one round trip
each. The append script also keeps the user's session index and the
namespace's ``users`` set; the delete script drops a user from that set
with their last session; the prune script drops users whose session index
expired, unless they wrote again meanwhile. The head script reads the change
stream's newest id with the namespace's generation token, making the token
the first time (see :mod:`.redis_feed`).
"""

from __future__ import annotations

import base64
import json
from typing import Any

__all__ = ["APPEND", "COMPLETE", "DELETE", "HEAD", "PRUNE", "READ", "dec", "enc"]

APPEND = """
-- KEYS[1] list, KEYS[2] entry, KEYS[3] user's sessions, KEYS[4] the namespace's users
-- ARGV: qa, payload, ttl_ms, max_entries, entry_prefix, session key, now, list_prefix, user
local ttl = tonumber(ARGV[3])
redis.call('SADD', KEYS[4], ARGV[9])
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ttl > 0 then
    -- sessions expire: forget the user's expired ones (this one too, if it expired:
    -- it starts again at the end), else the index grows with every session ever
    for _, sk in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
      if redis.call('EXISTS', ARGV[8] .. sk) == 0 then redis.call('ZREM', KEYS[3], sk) end
    end
  end
  redis.call('ZADD', KEYS[3], 'NX', tonumber(ARGV[7]), ARGV[6])
end
local is_new = redis.call('EXISTS', KEYS[2]) == 0
if ttl > 0 then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
else
  redis.call('SET', KEYS[2], ARGV[2])
end
if is_new then redis.call('RPUSH', KEYS[1], ARGV[1]) end
local cap = tonumber(ARGV[4])
if cap > 0 then
  while redis.call('LLEN', KEYS[1]) > cap do
    redis.call('DEL', ARGV[5] .. redis.call('LPOP', KEYS[1]))
  end
end
if ttl > 0 then
  for _ = 1, 8 do
    local head = redis.call('LINDEX', KEYS[1], 0)
    if not head or redis.call('EXISTS', ARGV[5] .. head) == 1 then break end
    redis.call('LPOP', KEYS[1])
  end
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)  -- outlives every list it names: they expire earlier
  redis.call('PEXPIRE', KEYS[4], ttl)  -- likewise; once gone, the next scan walks once
end
return 1
"""

READ = """
-- KEYS[1] list; ARGV: start, entry_prefix
local ids = redis.call('LRANGE', KEYS[1], tonumber(ARGV[1]), -1)
if #ids == 0 then return {} end
local out = {}
-- MGET in chunks: unpack() of ~8,000 values or more overflows Lua's C stack
for first = 1, #ids, 1000 do
  local keys = {}
  for i = first, math.min(first + 999, #ids) do keys[#keys + 1] = ARGV[2] .. ids[i] end
  for _, v in ipairs(redis.call('MGET', unpack(keys))) do
    if v then out[#out + 1] = v end
  end
end
return out
"""

FIRST = """
-- KEYS[1] list; ARGV: entry_prefix. The oldest entry still stored (ids whose entry
-- expired are passed over), or false.
local n = redis.call('LLEN', KEYS[1])
for first = 0, n - 1, 100 do
  for _, id in ipairs(redis.call('LRANGE', KEYS[1], first, first + 99)) do
    local v = redis.call('GET', ARGV[1] .. id)
    if v then return v end
  end
end
return false
"""

DELETE = """
-- KEYS[1] list, KEYS[2] user's sessions, KEYS[3] the namespace's users
-- ARGV: entry_prefix, session key, user
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
local n = 0
for _, id in ipairs(ids) do n = n + redis.call('DEL', ARGV[1] .. id) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SREM', KEYS[3], ARGV[3]) end
return n
"""

PRUNE = """
-- KEYS[1] the namespace's users; ARGV: user-key prefix, then users found without sessions
for i = 2, #ARGV do
  if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 0 then redis.call('SREM', KEYS[1], ARGV[i]) end
end
return 0
"""

HEAD = """
-- KEYS[1] the generation token, KEYS[2] the changes stream; ARGV[1] a new token
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local id = '0-0'
if last[1] then id = last[1][1] end
return {redis.call('GET', KEYS[1]), id}
"""

COMPLETE = "*"
"""A member of the ``users`` set (no encoded user is ``*``): every user with data is in it."""


def enc(value: object) -> str:
    """An id (any JSON value) as it enters a key: JSON, then unpadded base64url."""
    raw = json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def dec(text: str) -> Any:
    """The id an :func:`enc` text encodes."""
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
