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

from ...tasks import Move, lua_moves

COMMON = r"""
local P = ARGV[1]
local function now()
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
  for _, name in ipairs({'nodes', 'inc', 'seen', 'left', 'news', 'pub', 'depth'}) do hash_key(P .. name) end
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
  for _, name in ipairs({'nodes', 'seen', 'left', 'inc', 'news', 'pub', 'depth'}) do
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

ENQUEUE = COMMON + r"""
-- Returns per item 0 (its node is full), 1 (stored) or 2 (the id was already stored: left as it is).
-- ARGV: P, then per item one msgpack array of strings: id, node ('' = pending), node_name, capacity, prio,
--       delay (seconds held back), why, spec, submitter, submitted_at, parent, signature (one argument per task)
mesh_sets()
local t = now()
local out = {}
local woken = {}
local depths = {}
for i = 2, #ARGV do
  local a = cmsgpack.unpack(ARGV[i])
  local id, node, name, cap = a[1], a[2], a[3], tonumber(a[4])
  local prio, nb, why, spec = tonumber(a[5]), due_at(a[6], t), a[7], a[8]
  local sub, at, parent, sig = a[9], a[10], a[11], a[12] or ''
  local h = P .. 't:' .. id
  if redis.call('EXISTS', h) == 1 then
    table.insert(out, 2)
  else
    local full
    if node == '' then
      full = redis.call('ZCARD', P .. 'pending') >= cap
    else
      depths[node] = depths[node] or depth(node)
      full = depths[node] >= cap
    end
    if full then
      table.insert(out, 0)
    else
      local seq = redis.call('INCR', P .. 'seq')
      local status = (node == '') and 'pending' or 'assigned'
      redis.call('HSET', h, 'spec', spec, 'node', node, 'node_name', name, 'attempt', 1, 'failures', 0,
                 'prio', prio, 'seq', seq, 'submitter', sub, 'why', why, 'not_before', nb, 'submitted', at,
                 'parent', parent, 'cancel', 0, 'status', status, 'sig', sig)
      index_status(id, nil, status, seq)
      redis.call('LPUSH', P .. 'tasks', id)  -- newest first; a list is cheaper than an index
      if parent ~= '' then redis.call('SADD', P .. 'ch:' .. parent, id) end
      if node == '' then
        redis.call('ZADD', P .. 'pending', (3 - prio) * 1e13 + seq, id)
      else
        depths[node] = depths[node] + 1
        place(id, node, prio, seq, nb, t)
        if not woken[node] then
          woken[node] = true
          redis.call('PUBLISH', P .. 'wake:' .. node, 'tasks')
        end
      end
      table.insert(out, 1)
    end
  end
end
return {out, Q}
"""

CLAIM = COMMON + lua_moves(Move.CLAIM) + r"""
-- ARGV: P, node, limit, lease_seconds. Returns in how many seconds the earliest task still held back becomes
-- due ('' when none), then id, {field, value, ...} per claimed task
local node, limit, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
mesh_sets()
local t = now()
local due = redis.call('ZRANGEBYSCORE', P .. 'delayed:' .. node, '-inf', t)
depth(node)  -- a queue key of the wrong type is moved aside before it is read
for _, id in ipairs(due) do
  redis.call('ZREM', P .. 'delayed:' .. node, id)
  local f = tfields(id, 'prio', 'seq')
  local prio, seq = prio_of(f[1]), num(f[2])
  if prio and seq then
    redis.call('ZADD', P .. 'inbox:' .. node, (3 - prio) * 1e13 + seq, id)
  elseif f[1] or f[2] then
    task_aside(id, bad('prio / seq', f[1], f[2]))
  end
end
local ids = redis.call('ZRANGE', P .. 'inbox:' .. node, 0, limit - 1)
local later = redis.call('ZRANGE', P .. 'delayed:' .. node, 0, 0, 'WITHSCORES')
local out = {later[2] and tostring(math.max(0, tonumber(later[2]) - t)) or ''}
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. 'inbox:' .. node, id)
  local h = P .. 't:' .. id
  local f = tfields(id, 'status', 'seq', 'prio', 'attempt')
  if f[1] and FROM.claim[f[1]] and not (num(f[2]) and prio_of(f[3]) and num(f[4])) then
    task_aside(id, bad('seq / prio / attempt', f[2], f[3], f[4]))
  elseif f[1] and FROM.claim[f[1]] then
    index_status(id, 'assigned', 'running', f[2])
    redis.call('HSET', h, 'status', 'running', 'started', t, 'lease', t + lease)
    redis.call('SADD', P .. 'held:' .. node, id)
    redis.call('ZADD', P .. 'leases', t + lease, id)
    table.insert(out, id)
    table.insert(out, redis.call('HGETALL', h))  -- the claimer needs no second round trip
  end
end
return {out, Q}
"""

RENEW = COMMON + r"""
-- ARGV: P, node, lease_seconds, then per task id, attempt, progress ('' = no new report), progress message
local node, lease = ARGV[2], tonumber(ARGV[3])
mesh_sets()
local t = now()
local kept = {}
for i = 4, #ARGV, 4 do
  local id, att, progress, message = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local f = tfields(id, 'status', 'node', 'attempt')
  if f[1] == 'running' and f[2] == node and f[3] == att then
    if progress ~= '' then
      redis.call('HSET', P .. 't:' .. id, 'lease', t + lease, 'progress', progress, 'progress_msg', message)
    else
      redis.call('HSET', P .. 't:' .. id, 'lease', t + lease)
    end
    redis.call('ZADD', P .. 'leases', t + lease, id)
    table.insert(kept, id)
  end
end
return {kept, Q}
"""

COMPLETE = COMMON + lua_moves(Move.COMPLETE) + r"""
-- ARGV: P, then per item one msgpack array of strings: id, attempt, node, status, result, error
mesh_sets()
local t = now()
local out = {}
for i = 2, #ARGV do
  local a = cmsgpack.unpack(ARGV[i])
  local id, att, node, st, res, err = a[1], a[2], a[3], a[4], a[5], a[6]
  local h = P .. 't:' .. id
  local f = tfields(id, 'status', 'node', 'attempt', 'seq', 'submitter', 'node_name')
  local fenced = f[1] and FROM.complete[f[1]] and f[2] == node and f[3] == att
  if fenced and not num(f[4]) then
    task_aside(id, bad('seq', f[4]))
    table.insert(out, false)
  elseif fenced then
    index_status(id, f[1], st, f[4])
    redis.call('HSET', h, 'status', st, 'result', res, 'error', err, 'finished', t)
    redis.call('SREM', P .. 'held:' .. node, id)  -- a running task is only held and leased
    redis.call('ZREM', P .. 'leases', id)
    if st ~= 'succeeded' then end_attempt(id, att, t, err) end
    local sub = f[5] or ''
    feed(id, sub, st, att, node, f[6] or '', res, err, t)  -- the submitter blocks on its feed: no wake-up
    table.insert(out, sub)
  else
    table.insert(out, false)
  end
end
return {out, Q}
"""

REASSIGN = COMMON + lua_moves(Move.REROUTE, Move.REQUEUE, Move.FINAL, Move.CANCELLED) + r"""
-- ARGV: P, then per move: id, expected_attempt, expected_node, node, node_name, why, delay, bump,
--       error, count_failure, final_status  (11 values). Returns per move {ok, submitter, target}
mesh_sets()
local t = now()
local out = {}
for i = 2, #ARGV, 11 do
  local id, eatt, enode, node, name, why = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local nb = due_at(ARGV[i + 6], t)
  local bump, err, cf, final = tonumber(ARGV[i + 7]), ARGV[i + 8], tonumber(ARGV[i + 9]), ARGV[i + 10]
  local h = P .. 't:' .. id
  local f = tfields(id, 'status', 'node', 'attempt', 'seq', 'prio', 'cancel', 'submitter')
  local st = f[1] or ''
  -- A task whose cancel was asked for ends cancelled instead of moving on (and counts no failure).
  local kind
  if f[6] == '1' and FROM.cancelled[st] then kind = 'cancelled'
  elseif node ~= '' then kind = 'reroute'
  elseif final == 'pending' then kind = 'requeue'
  else kind = 'final' end
  local fenced = FROM[kind][st] and (f[2] or '') == enode and f[3] == eatt
  if fenced and not (num(f[4]) and prio_of(f[5]) and num(f[3])) then
    task_aside(id, bad('seq / prio / attempt', f[4], f[5], f[3]))
    table.insert(out, {0, '', ''})
  elseif fenced then
    unhold(id, f[2])
    end_attempt(id, eatt, t, err)
    if err ~= '' then redis.call('HSET', h, 'error', err) end
    if kind ~= 'cancelled' then redis.call('HINCRBY', h, 'failures', cf) end
    local target = ''
    if kind == 'cancelled' then
      set_status(id, st, 'cancelled', f[4])
      if err == '' then redis.call('HSET', h, 'error', 'cancelled') end
      finish(id, t)
    elseif kind == 'reroute' then
      redis.call('HINCRBY', h, 'attempt', bump)
      redis.call('HSET', h, 'node', node, 'node_name', name, 'why', why, 'not_before', nb, 'lease', '', 'started', '')
      redis.call('HDEL', h, 'progress', 'progress_msg')  -- the new attempt has reported nothing yet
      set_status(id, st, 'assigned', f[4])
      place(id, node, tonumber(f[5]), tonumber(f[4]), nb, t)
      target = node
    elseif kind == 'requeue' then
      redis.call('HINCRBY', h, 'attempt', bump)
      redis.call('HSET', h, 'node', '', 'node_name', '', 'why', why, 'not_before', nb, 'lease', '', 'started', '')
      redis.call('HDEL', h, 'progress', 'progress_msg')
      set_status(id, st, 'pending', f[4])
      redis.call('ZADD', P .. 'pending', (3 - tonumber(f[5])) * 1e13 + tonumber(f[4]), id)
    else
      set_status(id, st, final, f[4])
      finish(id, t)
    end
    table.insert(out, {1, f[7] or '', target})
  else
    table.insert(out, {0, '', ''})
  end
end
return {out, Q}
"""

STRANDED = COMMON + r"""
-- ARGV: P, now_ignored, dead ids...
local t = now()
local ids = {}
local seen = {}
local function add(list)
  for _, id in ipairs(list) do
    if not seen[id] then seen[id] = true; table.insert(ids, id) end
  end
end
mesh_sets()  -- a queue key of the wrong type is moved aside before it is read
for i = 3, #ARGV do
  local node = ARGV[i]
  depth(node)
  add(redis.call('SMEMBERS', P .. 'held:' .. node))
  add(redis.call('ZRANGE', P .. 'inbox:' .. node, 0, -1))
  add(redis.call('ZRANGE', P .. 'delayed:' .. node, 0, -1))
end
add(redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', t))
add(redis.call('ZRANGE', P .. 'pending', 0, 4999))
return {{tostring(t), ids}, Q}
"""

CANCEL = COMMON + lua_moves(Move.CANCEL_QUEUED, Move.CANCEL_REQUEST) + r"""
mesh_sets()
local t = now()
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local h = P .. 't:' .. id
  local f = tfields(id, 'status', 'node', 'seq', 'submitter')
  if f[1] and FROM.cancel_queued[f[1]] and not num(f[3]) then
    task_aside(id, bad('seq', f[3]))
    f = {}
  end
  if not f[1] then
    table.insert(out, {'missing', '', ''})
  elseif FROM.cancel_queued[f[1]] then
    unhold(id, f[2])
    set_status(id, f[1], 'cancelled', f[3])
    redis.call('HSET', h, 'error', 'cancelled before it ran')
    finish(id, t)
    table.insert(out, {'cancelled', '', f[4] or ''})
  elseif FROM.cancel_request[f[1]] then
    redis.call('HSET', h, 'cancel', 1)
    table.insert(out, {'cancelling', f[2] or '', ''})
  else
    table.insert(out, {f[1], '', ''})
  end
end
return {out, Q}
"""

REPLAY = COMMON + lua_moves(Move.REPLAY) + r"""
-- ARGV: P, id, node, node_name, why
local id, node, name, why = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
mesh_sets()
local t = now()
local h = P .. 't:' .. id
local f = tfields(id, 'status', 'seq', 'prio')
if not FROM.replay[f[1] or ''] then return {0, Q} end
if not (num(f[2]) and prio_of(f[3])) then
  task_aside(id, bad('seq / prio', f[2], f[3]))
  return {0, Q}
end
redis.call('HINCRBY', h, 'attempt', 1)
redis.call('HSET', h, 'failures', 0, 'node', node, 'node_name', name, 'why', why, 'not_before', 0, 'lease', '',
           'started', '', 'finished', '', 'result', '', 'error', '', 'cancel', 0)
redis.call('HDEL', h, 'progress', 'progress_msg')
if node == '' then
  set_status(id, f[1], 'pending', f[2])
  redis.call('ZADD', P .. 'pending', (3 - tonumber(f[3])) * 1e13 + tonumber(f[2]), id)
else
  set_status(id, f[1], 'assigned', f[2])
  place(id, node, tonumber(f[3]), tonumber(f[2]), 0, t)
end
return {1, Q}
"""

PRUNE = COMMON + r"""
-- ARGV: P, tasks_kept, dead_letters_kept, limit. Finished tasks past the newest tasks_kept leave the
-- task list from its oldest end and are deleted; unfinished and dead-lettered ones only leave the list
-- (their state's own index still lists them). Dead letters past dead_letters_kept go, oldest first.
local kept, dead_kept, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local gone = 0
local PRUNABLE = {succeeded=true, failed=true, cancelled=true}
local function drop(id, st)
  local h = P .. 't:' .. id
  local parent = redis.call('HGET', h, 'parent')
  if parent and parent ~= '' then redis.call('SREM', P .. 'ch:' .. parent, id) end
  redis.call('DEL', h, P .. 'a:' .. id)
  count(st, -1)
  if INDEXED[st] then redis.call('ZREM', P .. 'st:' .. st, id) end
  gone = gone + 1
end
local over = math.min(redis.call('LLEN', P .. 'tasks') - kept, limit)
for _ = 1, over do
  local id = redis.call('RPOP', P .. 'tasks')
  if not id then break end
  local st = tfields(id, 'status')[1]
  if st and PRUNABLE[st] then drop(id, st) end
end
local dead = redis.call('ZCARD', P .. 'st:dead_letter') - dead_kept
if dead > 0 then
  for _, id in ipairs(redis.call('ZRANGE', P .. 'st:dead_letter', 0, math.min(dead, limit) - 1)) do
    drop(id, 'dead_letter')
  end
end
return {gone, Q}
"""

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

LIST = COMMON + r"""
-- ARGV: P, status, limit, max_scan. Ids of the newest tasks in a state without an index of its own.
local st, limit, max_scan = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
if st == 'running' then
  out = redis.call('ZRANGE', P .. 'leases', 0, -1)
elseif st == 'assigned' then
  for _, node in ipairs(redis.call('HKEYS', P .. 'nodes')) do
    for _, id in ipairs(redis.call('ZRANGE', P .. 'inbox:' .. node, 0, limit - 1)) do table.insert(out, id) end
    for _, id in ipairs(redis.call('ZRANGE', P .. 'delayed:' .. node, 0, limit - 1)) do table.insert(out, id) end
  end
else
  local start = 0
  while #out < limit and start < max_scan do
    local ids = redis.call('LRANGE', P .. 'tasks', start, start + 499)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      if #out < limit and tfields(id, 'status')[1] == st then table.insert(out, id) end
    end
    start = start + 500
  end
end
return {out, Q}
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
