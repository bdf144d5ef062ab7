"""Membership scripts: heartbeat, leave, and the snapshot that follows changes (see ``MEMBERS``)."""

from .lua_common import COMMON

# Membership follows changes: ``ver`` counts changes of node records mesh-wide and ``vers`` scores each node by
# the version of its last change (record content, incarnation, leave mark, depth, removal), so a reader fetches
# only what changed since its last read; ``beats`` scores each node by its last heartbeat on this server's
# clock, so the stale ones are one range read. ``seen`` keeps the same stamps by node for full reads.
MEMBERS = r"""
local function zset_key(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'zset' and kind ~= 'none' then key_aside(key, 'a ' .. kind .. ' where a sorted set belongs') end
end
local function member_keys()
  for _, name in ipairs({'nodes', 'inc', 'seen', 'left', 'news', 'pub', 'depth', 'grants'}) do hash_key(P .. name) end
  zset_key(P .. 'vers')
  zset_key(P .. 'beats')
end
local function bump(id, t)
  -- one more change of the membership: ``id`` changed at the new version
  local v = redis.pcall('INCR', P .. 'ver')
  if type(v) == 'table' then
    key_aside(P .. 'ver', 'membership version: ' .. tostring(v['err']))
    v = redis.call('INCR', P .. 'ver')
  end
  if v == 1 then redis.call('SET', P .. 'epoch', string.format('%.6f', t)) end  -- a counter that restarted
  redis.call('ZADD', P .. 'vers', v, id)
  return v
end
local function forget(id, t)
  -- a ghost: dead (or left) for longer than the retention period
  for _, name in ipairs({'nodes', 'seen', 'left', 'inc', 'news', 'pub', 'depth', 'grants'}) do
    redis.call('HDEL', P .. name, id)
  end
  redis.call('ZREM', P .. 'beats', id)
  bump(id, t)
end
local function guarded(body)
  -- the membership keys are checked only when a call on them fails (a key of the wrong type, written behind
  -- the mesh's back): moved aside, then the body runs again (its writes are idempotent)
  local ok, res = pcall(body)
  if ok then return res end
  member_keys()
  return body()
end
local function hmget(name, ids)
  -- HMGET of many fields, 500 at a time (Lua's unpack has a limit); one value per id, in order
  local out = {}
  for i = 1, #ids, 500 do
    local got = redis.call('HMGET', P .. name, unpack(ids, i, math.min(i + 499, #ids)))
    for _, v in ipairs(got) do table.insert(out, v) end
  end
  return out
end
local function left_mark(id)
  -- a node's leave mark (the incarnation that left), or false; one that is not a whole number goes aside
  local raw = redis.call('HGET', P .. 'left', id)
  if not raw then return false end
  local n = num(raw)
  if n and n % 1 == 0 then return raw end
  redis.call('HDEL', P .. 'left', id)
  quarantine('node', id, raw, 'leave mark ' .. raw .. ' is not a whole number')
  return false
end
"""

HEARTBEAT = COMMON + MEMBERS + r"""
-- ARGV: P, node_id, incarnation, record, news (digest of what is not load gauges), gauge_seconds
local id, inc = ARGV[2], tonumber(ARGV[3])
local t = now()
return guarded(function()
local old = redis.call('HGET', P .. 'nodes', id)
local prev_inc = num(redis.call('HGET', P .. 'inc', id)) or -1
local left = redis.call('HGET', P .. 'left', id)
redis.call('HSET', P .. 'nodes', id, ARGV[4])
redis.call('HSET', P .. 'inc', id, inc)
redis.call('HSET', P .. 'seen', id, t)
redis.call('ZADD', P .. 'beats', t, id)
local changed = (old == false) or (prev_inc ~= inc)
if left and not num(left) then
  redis.call('HDEL', P .. 'left', id)
  quarantine('node', id, left, 'leave mark ' .. left .. ' is not a number')
  changed = true
elseif left and inc > num(left) then
  redis.call('HDEL', P .. 'left', id)
  changed = true
end
-- news for every reader: joined, a new incarnation, a leave undone, what is not a gauge, its depth; gauges alone
-- at most every gauge_seconds
local news = changed or redis.call('HGET', P .. 'news', id) ~= ARGV[5]
local d = depth(id)
if num(redis.call('HGET', P .. 'depth', id)) ~= d then
  redis.call('HSET', P .. 'depth', id, d)
  news = true
end
if not news and old ~= ARGV[4] then
  local pub = num(redis.call('HGET', P .. 'pub', id))
  news = (not pub) or t - pub >= tonumber(ARGV[6])
end
if news then
  redis.call('HSET', P .. 'news', id, ARGV[5])
  redis.call('HSET', P .. 'pub', id, t)
  bump(id, t)
end
return {changed and 1 or 0, Q}
end)
"""

LEAVE = COMMON + MEMBERS + r"""
return guarded(function()
redis.call('HSET', P .. 'left', ARGV[2], ARGV[3])
bump(ARGV[2], now())
return {1, Q}
end)
"""

SNAPSHOT = COMMON + MEMBERS + r"""
-- ARGV: P, ghost_seconds, since (the reader's version; 0: read everything), epoch (the reader's), window.
-- Everything (since 0, or the counter restarted): {now, epoch, version, 1, records, seen, left, depths}.
-- What changed since: {now, epoch, version, 0, {id, record or '', leave mark or '', depth ...},
--   {id, stamp ...} of the nodes whose last heartbeat is older than window seconds (all when window is 0),
--   number of records}
local t = now()
return guarded(function()
local ghost, since, window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
local raw_epoch = redis.pcall('GET', P .. 'epoch')
if type(raw_epoch) == 'table' then key_aside(P .. 'epoch', 'membership epoch: ' .. tostring(raw_epoch['err'])) end
local ver = redis.pcall('GET', P .. 'ver')
if type(ver) == 'table' or (ver and not num(ver)) then
  key_aside(P .. 'ver', 'membership version is not a number')
  ver = false
end
ver = num(ver) or 0
if type(raw_epoch) ~= 'string' then
  raw_epoch = string.format('%.6f', t)
  redis.call('SET', P .. 'epoch', raw_epoch)
end
if since > 0 and raw_epoch == ARGV[4] and since <= ver then
  local cutoff = '+inf'
  if window > 0 then cutoff = tostring(t - window) end
  local stale = {}
  local old = redis.call('ZRANGEBYSCORE', P .. 'beats', '-inf', cutoff, 'WITHSCORES')
  for i = 1, #old, 2 do
    local ts = tonumber(old[i + 1])
    if t - ts > ghost then
      forget(old[i], t)
    else
      table.insert(stale, old[i])
      table.insert(stale, old[i + 1])
    end
  end
  local changed = {}
  local ids = redis.call('ZRANGEBYSCORE', P .. 'vers', '(' .. since, '+inf')
  if #ids > 0 then  -- three reads however many changed
    local blobs, marks, ds = hmget('nodes', ids), hmget('left', ids), hmget('depth', ids)
    for i, id in ipairs(ids) do
      local mark = marks[i]
      if mark and not (num(mark) and num(mark) % 1 == 0) then mark = left_mark(id) end
      table.insert(changed, id)
      table.insert(changed, blobs[i] or '')
      table.insert(changed, mark or '')
      table.insert(changed, num(ds[i]) or 0)
    end
  end
  ver = num(redis.call('GET', P .. 'ver')) or 0
  return {{tostring(t), raw_epoch, tostring(ver), 0, changed, stale, redis.call('HLEN', P .. 'nodes')}, Q}
end
local seen = redis.call('HGETALL', P .. 'seen')
local out_seen, depths, out_left = {}, {}, {}
for i = 1, #seen, 2 do
  local id, ts = seen[i], num(seen[i + 1])
  if not ts then
    redis.call('HDEL', P .. 'seen', id)
    quarantine('node', id, seen[i + 1], 'heartbeat time ' .. seen[i + 1] .. ' is not a number')
  elseif t - ts > ghost then
    forget(id, t)
  else
    redis.call('ZADD', P .. 'beats', ts, id)  -- stamps written by hand or by an older release are followed too
    table.insert(out_seen, id)
    table.insert(out_seen, seen[i + 1])
    table.insert(depths, id)
    table.insert(depths, depth(id))
  end
end
local left = redis.call('HGETALL', P .. 'left')
for i = 1, #left, 2 do
  local mark = left_mark(left[i])
  if mark then
    table.insert(out_left, left[i])
    table.insert(out_left, mark)
  end
end
ver = num(redis.call('GET', P .. 'ver')) or 0
return {{tostring(t), raw_epoch, tostring(ver), 1, redis.call('HGETALL', P .. 'nodes'), out_seen, out_left, depths}, Q}
end)
"""
