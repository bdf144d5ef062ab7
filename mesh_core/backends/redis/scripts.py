"""Lua scripts of the Redis backend: every fenced task transition is one atomic script.

All keys share the hash tag ``{cluster}`` so a Redis Cluster keeps one mesh in
one slot. ARGV[1] is always the key prefix ``mesh:{cluster}:``. Time comes from
Redis ``TIME`` so liveness and leases are judged by one clock. Which task move
may start from which status is not written here: ``FROM`` (move → source
statuses, only for the moves a script applies) is generated from
``mesh_core.tasks.TASK_MOVES`` and prepended, so
the scripts and the SQLite backend read the one table.

No script trusts a stored field: numbers go through ``num``/``prio_of``, task hashes are read with
``tfields`` (a key of the wrong type is no error), and an entry that cannot be used is moved to the capped
``quarantine`` stream with its reason and skipped, never an error for the whole call. Every script built
on ``COMMON`` returns ``{result, quarantined}``: the records it moved aside (kind, key, reason …), which the
caller counts.
"""

from .lua_common import COMMON
from .lua_members import HEARTBEAT, LEAVE, MEMBERS, SNAPSHOT
from .lua_tasks import CANCEL, CLAIM, COMPLETE, ENQUEUE, LIST, PRUNE, REASSIGN, RENEW, REPLAY, STRANDED

__all__ = ["ASIDE", "CANCEL", "CLAIM", "COMMON", "COMPACT", "COMPLETE", "ENQUEUE", "HEARTBEAT", "HOLD_LEASE", "LEAVE",
           "LIST", "MEMBERS", "PRUNE", "REASSIGN", "RENEW", "REPLAY", "SNAPSHOT", "STRANDED"]

COMPACT = r"""
-- ARGV: P, cursor. Trim the memory stream below the cursor and raise the horizon to it (never lower it).
local P, id = ARGV[1], ARGV[2]
local k = P .. 'memlog:horizon'
local function parse(s)
  local ms, seq = string.match(s, '^(%d+)-(%d+)$')
  return tonumber(ms or 0), tonumber(seq or 0)
end
local dropped = redis.call('XTRIM', P .. 'memlog', 'MINID', id)
local cur = redis.call('GET', k)
local a, b = parse(id)
if cur then
  local c, d = parse(cur)
  if c > a or (c == a and d >= b) then return dropped end
end
if dropped > 0 or cur then redis.call('SET', k, id) end
return dropped
"""

ASIDE = COMMON + r"""
-- ARGV: P, then pairs id, reason: tasks a reader could not decode, moved aside (see task_aside)
for i = 2, #ARGV, 2 do
  -- another reader may have moved it already: a task is moved (and counted) once
  if redis.call('EXISTS', P .. 't:' .. ARGV[i]) == 1 then task_aside(ARGV[i], ARGV[i + 1]) end
end
return {#Q / 3, Q}
"""

HOLD_LEASE = r"""
-- ARGV: P, name, holder, ttl_ms
local k = ARGV[1] .. 'lease:' .. ARGV[2]
local cur = redis.call('GET', k)
if not cur or cur == ARGV[3] then
  redis.call('SET', k, ARGV[3], 'PX', ARGV[4])
  return ARGV[3]
end
return cur
"""
