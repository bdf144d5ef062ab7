"""The Lua every script built on it shares (``COMMON``): the prefix and clock, field readers that trust no stored
value (``num``, ``prio_of``, ``tfields``), the quarantine that moves an unusable entry aside, and the task
helpers the task scripts share. See ``scripts`` for the conventions every script follows."""

from ..started import GRANT_FRESH, GRANT_LOST

COMMON = f"""
local P = ARGV[1]
local GRANT_FRESH = {GRANT_FRESH!r}  -- started.GRANT_FRESH
local GRANT_LOST = {GRANT_LOST!r}  -- started.GRANT_LOST (see unanswered_after)
""" + r"""local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local Q = {}  -- records this call moved aside: kind, key, reason, ... (the caller counts them)
local function quarantine(kind, key, raw, reason)
  redis.call('XADD', P .. 'quarantine', 'MAXLEN', '~', 10000, '*', 'kind', kind, 'key', key, 'raw', raw or '',
             'reason', reason, 'at', tostring(now()))
  table.insert(Q, kind)
  table.insert(Q, key)
  table.insert(Q, reason)
end
local function num(v)
  -- a stored finite number, or nil (Lua's tonumber also reads 'inf' and 'nan')
  local n = v and tonumber(v)
  if n and n == n and n > -math.huge and n < math.huge then return n end
  return nil
end
local function read_items(first, texts, fits)
  -- The items (one msgpack array per argument from ARGV[first] on), every one read before the script writes
  -- anything: its first ``texts`` values strings and ``fits(item)``, when given, true. Else nil and the number of the
  -- first item that is not (a malformed one half way would leave the items before it half written).
  local items = {}
  for i = first, #ARGV do
    local a = cmsgpack.unpack(ARGV[i])
    local ok = type(a) == 'table' and (fits == nil or fits(a))
    for k = 1, texts do ok = ok and type(a[k]) == 'string' end
    if not ok then return nil, i - first + 1 end
    table.insert(items, a)
  end
  return items
end
local function prio_of(v)
  local n = num(v)
  if n and n >= 0 and n <= 3 and n % 1 == 0 then return n end
  return nil
end
local function key_aside(key, why)
  -- a key of the wrong type where the mesh keeps its own: its dump goes aside, the key goes
  local raw = redis.call('DUMP', key) or ''
  redis.call('DEL', key)
  quarantine('key', key, raw, why)
end
local function hash_key(key)
  -- a mesh-wide hash must be a hash: anything else would fail every script that reads it
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'hash' and kind ~= 'none' then key_aside(key, 'a ' .. kind .. ' where a hash belongs') end
end
local function card(cmd, key)
  local n = redis.pcall(cmd, key)
  if type(n) == 'table' then
    key_aside(key, cmd .. ' failed: ' .. tostring(n['err']))
    return 0
  end
  return n
end
-- Tasks per status are counters; only the rare states keep an index of their own for listing
-- (assigned and running are listed from the inboxes and the lease set, succeeded from the newest tasks).
local INDEXED = {pending=true, failed=true, dead_letter=true, cancelled=true}
local function count(st, by)
  -- a counter that is not a whole number would fail every transition: it is set aside and starts again
  local ok = redis.pcall('HINCRBY', P .. 'counts', st, by)
  if type(ok) == 'table' then
    hash_key(P .. 'counts')
    local raw = redis.pcall('HGET', P .. 'counts', st)
    quarantine('count', st, type(raw) == 'string' and raw or '', 'task count: ' .. tostring(ok['err']))
    redis.call('HSET', P .. 'counts', st, math.max(by, 0))
  end
end
local function index_status(id, old, new, seq)
  if old and old ~= '' then
    count(old, -1)
    if INDEXED[old] then redis.call('ZREM', P .. 'st:' .. old, id) end
  end
  count(new, 1)
  if INDEXED[new] then redis.call('ZADD', P .. 'st:' .. new, seq, id) end
end
local function set_status(id, old, new, seq)
  index_status(id, old, new, seq)
  redis.call('HSET', P .. 't:' .. id, 'status', new)
end
local function unhold(id, node)
  if node and node ~= '' then
    redis.call('SREM', P .. 'held:' .. node, id)
    redis.call('ZREM', P .. 'granted:' .. node, id)
    redis.call('ZREM', P .. 'inbox:' .. node, id)
    redis.call('ZREM', P .. 'delayed:' .. node, id)
  end
  redis.call('ZREM', P .. 'leases', id)
  redis.call('ZREM', P .. 'pending', id)
end
local FEED_RESULT_BYTES = 512  -- larger results stay only in the task hash; the feed says 'read it'
local fed = {}  -- feeds written by this script call: their expiry is pushed once
local function feed(id, sub, st, att, node, name, res, err, t_now)
  -- The submitter's result feed: each entry carries the outcome, so its waiter needs no read.
  local full = '1'
  if #res > FEED_RESULT_BYTES then res, full = '', '0' end
  local key = P .. 'fin:' .. sub
  redis.call('XADD', key, 'MAXLEN', '~', 100000, '*', 'id', id, 'st', st, 'att', att, 'node', node,
             'nn', name, 'res', res, 'err', err, 'fin', t_now, 'full', full)
  if not fed[key] then
    fed[key] = true
    redis.call('PEXPIRE', key, 86400000)
  end
end
local function finish(id, t_now)
  -- Called after the final status, result and error are set.
  local h = P .. 't:' .. id
  redis.call('HSET', h, 'finished', t_now)
  local f = redis.call('HMGET', h, 'submitter', 'status', 'attempt', 'node', 'node_name', 'result', 'error')
  local sub = f[1] or ''
  feed(id, sub, f[2], f[3], f[4] or '', f[5] or '', f[6] or '', f[7] or '', t_now)
  return sub
end
local function end_attempt(id, att, t_now, err)
  -- A started attempt that did not simply succeed keeps its record (node, times, error); the last
  -- attempt is otherwise read from the task hash itself.
  local h = P .. 't:' .. id
  local f = redis.call('HMGET', h, 'node', 'node_name', 'started')
  if f[3] and f[3] ~= '' then
    redis.call('HSET', P .. 'a:' .. id, att,
               cmsgpack.pack({f[1] or '', f[2] or '', tonumber(f[3]), t_now, (err ~= '') and err or false}))
  end
end
local function mesh_sets()
  -- the lease and pending sets every transition writes: checked before anything is written (a script that
  -- fails half way keeps its first writes)
  card('ZCARD', P .. 'leases')
  card('ZCARD', P .. 'pending')
  hash_key(P .. 'counts')
end
local function depth(node)
  return card('ZCARD', P .. 'inbox:' .. node) + card('ZCARD', P .. 'delayed:' .. node)
    + card('SCARD', P .. 'held:' .. node)
end
local function task_aside(id, reason)
  -- a task that cannot be used: its hash goes aside, it leaves every queue and index, it is deleted
  local h = P .. 't:' .. id
  local flat = redis.pcall('HGETALL', h)
  local raw, st, node = '', nil, nil
  if type(flat) == 'table' and not flat['err'] then
    raw = cmsgpack.pack(flat)
    for i = 1, #flat, 2 do
      if flat[i] == 'status' then st = flat[i + 1] elseif flat[i] == 'node' then node = flat[i + 1] end
    end
  else
    raw = redis.call('DUMP', h) or ''
  end
  unhold(id, node)
  if st and INDEXED[st] then redis.call('ZREM', P .. 'st:' .. st, id) end
  if st and (INDEXED[st] or st == 'assigned' or st == 'running' or st == 'succeeded') then
    count(st, -1)
  end
  redis.call('DEL', h, P .. 'a:' .. id)
  quarantine('task', id, raw, reason)
end
local function tfields(id, ...)
  -- HMGET on a task hash; a key of the wrong type is moved aside and reads as a missing task
  local f = redis.pcall('HMGET', P .. 't:' .. id, ...)
  if f['err'] then
    task_aside(id, 'task key is not a hash: ' .. tostring(f['err']))
    return {}
  end
  return f
end
local function bad(what, ...)
  -- why a task was refused: its fields as stored
  local parts = {}
  for _, v in ipairs({...}) do table.insert(parts, tostring(v)) end
  return what .. ' not usable: ' .. table.concat(parts, ' / ')
end
-- A task held back ``delay`` seconds from now on this server's clock: its not_before (0: due at once).
local function due_at(delay, t_now)
  local d = num(delay) or 0
  if d > 0 then return t_now + d end
  return 0
end
local function place(id, node, prio, seq, not_before, t_now)
  local score = (3 - prio) * 1e13 + seq
  if (num(not_before) or 0) > t_now then
    redis.call('ZADD', P .. 'delayed:' .. node, not_before, id)
  else
    redis.call('ZADD', P .. 'inbox:' .. node, score, id)
  end
end
"""
