"""Lua scripts of the Redis backend: every fenced task transition is one atomic script.

All keys share the hash tag ``{cluster}`` so a Redis Cluster keeps one mesh in
one slot. ARGV[1] is always the key prefix ``mesh:{cluster}:``. Time comes from
Redis ``TIME`` so liveness and leases are judged by one clock.
"""

COMMON = r"""
local P = ARGV[1]
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function set_status(id, old, new, seq)
  if old and old ~= '' then redis.call('ZREM', P .. 'st:' .. old, id) end
  redis.call('ZADD', P .. 'st:' .. new, seq, id)
  redis.call('HSET', P .. 't:' .. id, 'status', new)
end
local FINAL = {succeeded=true, failed=true, dead_letter=true, cancelled=true}
local function unhold(id, node)
  if node and node ~= '' then
    redis.call('SREM', P .. 'held:' .. node, id)
    redis.call('ZREM', P .. 'inbox:' .. node, id)
    redis.call('ZREM', P .. 'delayed:' .. node, id)
  end
  redis.call('ZREM', P .. 'leases', id)
  redis.call('ZREM', P .. 'pending', id)
end
local function finish(id, t_now)
  local h = P .. 't:' .. id
  local sub = redis.call('HGET', h, 'submitter') or ''
  redis.call('HSET', h, 'finished', t_now)
  local feed = P .. 'fin:' .. sub
  redis.call('XADD', feed, 'MAXLEN', '~', 100000, '*', 'id', id)
  redis.call('PEXPIRE', feed, 86400000)
  return sub
end
local function depth(node)
  return redis.call('ZCARD', P .. 'inbox:' .. node) + redis.call('ZCARD', P .. 'delayed:' .. node)
    + redis.call('SCARD', P .. 'held:' .. node)
end
local function place(id, node, prio, seq, not_before, t_now)
  local score = (3 - prio) * 1e13 + seq
  if tonumber(not_before) > t_now then
    redis.call('ZADD', P .. 'delayed:' .. node, not_before, id)
  else
    redis.call('ZADD', P .. 'inbox:' .. node, score, id)
  end
end
"""

HEARTBEAT = COMMON + r"""
-- ARGV: P, node_id, incarnation, record, keep_seconds
local id, inc = ARGV[2], tonumber(ARGV[3])
local t = now()
local old = redis.call('HGET', P .. 'nodes', id)
local prev_inc = tonumber(redis.call('HGET', P .. 'inc', id) or '-1')
local left = redis.call('HGET', P .. 'left', id)
redis.call('HSET', P .. 'nodes', id, ARGV[4])
redis.call('HSET', P .. 'inc', id, inc)
redis.call('HSET', P .. 'seen', id, t)
local changed = (old == false) or (prev_inc ~= inc)
if left and inc > tonumber(left) then
  redis.call('HDEL', P .. 'left', id)
  changed = true
end
return changed and 1 or 0
"""

LEAVE = COMMON + r"""
redis.call('HSET', P .. 'left', ARGV[2], ARGV[3])
return 1
"""

SNAPSHOT = COMMON + r"""
-- ARGV: P, ghost_seconds. Returns {now, records, seen, left, depths}
local t = now()
local seen = redis.call('HGETALL', P .. 'seen')
local out_seen, depths = {}, {}
for i = 1, #seen, 2 do
  local id, ts = seen[i], tonumber(seen[i + 1])
  if t - ts > tonumber(ARGV[2]) then
    -- a ghost: dead (or left) for longer than the retention period
    redis.call('HDEL', P .. 'nodes', id)
    redis.call('HDEL', P .. 'seen', id)
    redis.call('HDEL', P .. 'left', id)
    redis.call('HDEL', P .. 'inc', id)
  else
    table.insert(out_seen, id)
    table.insert(out_seen, seen[i + 1])
    table.insert(depths, id)
    table.insert(depths, depth(id))
  end
end
return {tostring(t), redis.call('HGETALL', P .. 'nodes'), out_seen, redis.call('HGETALL', P .. 'left'), depths}
"""

ENQUEUE = COMMON + r"""
-- ARGV: P, then per item 8 values: id, node ('' = pending), node_name, capacity, prio, not_before, why, spec,
--       then submitter, submitted_at, parent  (11 values per item)
local t = now()
local out = {}
local woken = {}
local n = (#ARGV - 1) / 11
for k = 0, n - 1 do
  local b = 1 + k * 11
  local id, node, name, cap = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], tonumber(ARGV[b + 4])
  local prio, nb, why, spec = tonumber(ARGV[b + 5]), ARGV[b + 6], ARGV[b + 7], ARGV[b + 8]
  local sub, at, parent = ARGV[b + 9], ARGV[b + 10], ARGV[b + 11]
  local h = P .. 't:' .. id
  if redis.call('EXISTS', h) == 1 then
    table.insert(out, 1)
  else
    local full
    if node == '' then full = redis.call('ZCARD', P .. 'pending') >= cap else full = depth(node) >= cap end
    if full then
      table.insert(out, 0)
    else
      local seq = redis.call('INCR', P .. 'seq')
      redis.call('HSET', h, 'spec', spec, 'node', node, 'node_name', name, 'attempt', 1, 'failures', 0,
                 'prio', prio, 'seq', seq, 'submitter', sub, 'why', why, 'not_before', nb, 'submitted', at,
                 'parent', parent, 'cancel', 0)
      redis.call('ZADD', P .. 'tasks', seq, id)
      if parent ~= '' then redis.call('SADD', P .. 'ch:' .. parent, id) end
      if node == '' then
        set_status(id, nil, 'pending', seq)
        redis.call('ZADD', P .. 'pending', (3 - prio) * 1e13 + seq, id)
      else
        set_status(id, nil, 'assigned', seq)
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
return out
"""

CLAIM = COMMON + r"""
-- ARGV: P, node, limit, lease_seconds
local node, limit, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local t = now()
local due = redis.call('ZRANGEBYSCORE', P .. 'delayed:' .. node, '-inf', t)
for _, id in ipairs(due) do
  redis.call('ZREM', P .. 'delayed:' .. node, id)
  local h = P .. 't:' .. id
  local f = redis.call('HMGET', h, 'prio', 'seq')
  redis.call('ZADD', P .. 'inbox:' .. node, (3 - tonumber(f[1])) * 1e13 + tonumber(f[2]), id)
end
local ids = redis.call('ZRANGE', P .. 'inbox:' .. node, 0, limit - 1)
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. 'inbox:' .. node, id)
  local h = P .. 't:' .. id
  local f = redis.call('HMGET', h, 'status', 'seq', 'attempt', 'node_name')
  if f[1] == 'assigned' then
    set_status(id, 'assigned', 'running', f[2])
    redis.call('HSET', h, 'started', t, 'lease', t + lease)
    redis.call('SADD', P .. 'held:' .. node, id)
    redis.call('ZADD', P .. 'leases', t + lease, id)
    redis.call('HSET', P .. 'a:' .. id, f[3], cmsgpack.pack({node, f[4] or '', t, false, false}))
    table.insert(out, id)
  end
end
return out
"""

RENEW = COMMON + r"""
-- ARGV: P, node, lease_seconds, then pairs id, attempt
local node, lease = ARGV[2], tonumber(ARGV[3])
local t = now()
local kept = {}
for i = 4, #ARGV, 2 do
  local id, att = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', P .. 't:' .. id, 'status', 'node', 'attempt')
  if f[1] == 'running' and f[2] == node and f[3] == att then
    redis.call('HSET', P .. 't:' .. id, 'lease', t + lease)
    redis.call('ZADD', P .. 'leases', t + lease, id)
    table.insert(kept, id)
  end
end
return kept
"""

COMPLETE = COMMON + r"""
-- ARGV: P, then per item: id, attempt, node, status, result, error  (6 values)
local t = now()
local out = {}
for i = 2, #ARGV, 6 do
  local id, att, node, st, res, err = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local h = P .. 't:' .. id
  local f = redis.call('HMGET', h, 'status', 'node', 'attempt', 'seq')
  if f[1] == 'running' and f[2] == node and f[3] == att then
    set_status(id, 'running', st, f[4])
    redis.call('HSET', h, 'result', res, 'error', err)
    unhold(id, node)
    local a = redis.call('HGET', P .. 'a:' .. id, att)
    if a then
      local rec = cmsgpack.unpack(a)
      rec[4] = t
      rec[5] = (err ~= '') and err or false
      redis.call('HSET', P .. 'a:' .. id, att, cmsgpack.pack(rec))
    end
    local sub = finish(id, t)
    if sub ~= '' then redis.call('PUBLISH', P .. 'wake:' .. sub, 'results') end
    table.insert(out, sub)
  else
    table.insert(out, false)
  end
end
return out
"""

REASSIGN = COMMON + r"""
-- ARGV: P, then per move: id, expected_attempt, expected_node, node, node_name, why, not_before, bump,
--       error, count_failure, final_status  (11 values). Returns per move {ok, submitter, target}
local t = now()
local out = {}
for i = 2, #ARGV, 11 do
  local id, eatt, enode, node, name, why = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local nb, bump, err, cf, final = ARGV[i + 6], tonumber(ARGV[i + 7]), ARGV[i + 8], tonumber(ARGV[i + 9]), ARGV[i + 10]
  local h = P .. 't:' .. id
  local f = redis.call('HMGET', h, 'status', 'node', 'attempt', 'seq', 'prio', 'cancel', 'submitter')
  local st = f[1]
  if (st == 'assigned' or st == 'running' or st == 'pending') and (f[2] or '') == enode and f[3] == eatt then
    unhold(id, f[2])
    local a = redis.call('HGET', P .. 'a:' .. id, eatt)
    if a then
      local rec = cmsgpack.unpack(a)
      if not rec[4] then rec[4] = t end
      if err ~= '' then rec[5] = err end
      redis.call('HSET', P .. 'a:' .. id, eatt, cmsgpack.pack(rec))
    end
    if err ~= '' then redis.call('HSET', h, 'error', err) end
    redis.call('HINCRBY', h, 'failures', cf)
    local target = ''
    if f[6] == '1' and st ~= 'pending' then
      set_status(id, st, 'cancelled', f[4])
      if err == '' then redis.call('HSET', h, 'error', 'cancelled') end
      finish(id, t)
    elseif node ~= '' then
      redis.call('HINCRBY', h, 'attempt', bump)
      redis.call('HSET', h, 'node', node, 'node_name', name, 'why', why, 'not_before', nb, 'lease', '', 'started', '')
      set_status(id, st, 'assigned', f[4])
      place(id, node, tonumber(f[5]), tonumber(f[4]), nb, t)
      target = node
    elseif final == 'pending' then
      redis.call('HINCRBY', h, 'attempt', bump)
      redis.call('HSET', h, 'node', '', 'node_name', '', 'why', why, 'not_before', nb, 'lease', '', 'started', '')
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
return out
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
for i = 3, #ARGV do
  local node = ARGV[i]
  add(redis.call('SMEMBERS', P .. 'held:' .. node))
  add(redis.call('ZRANGE', P .. 'inbox:' .. node, 0, -1))
  add(redis.call('ZRANGE', P .. 'delayed:' .. node, 0, -1))
end
add(redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', t))
add(redis.call('ZRANGE', P .. 'pending', 0, 4999))
return {tostring(t), ids}
"""

CANCEL = COMMON + r"""
local t = now()
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local h = P .. 't:' .. id
  local f = redis.call('HMGET', h, 'status', 'node', 'seq', 'submitter')
  if not f[1] then
    table.insert(out, {'missing', '', ''})
  elseif f[1] == 'pending' or f[1] == 'assigned' then
    unhold(id, f[2])
    set_status(id, f[1], 'cancelled', f[3])
    redis.call('HSET', h, 'error', 'cancelled before it ran')
    finish(id, t)
    table.insert(out, {'cancelled', '', f[4] or ''})
  elseif f[1] == 'running' then
    redis.call('HSET', h, 'cancel', 1)
    table.insert(out, {'cancelling', f[2] or '', ''})
  else
    table.insert(out, {f[1], '', ''})
  end
end
return out
"""

REPLAY = COMMON + r"""
-- ARGV: P, id, node, node_name, why
local id, node, name, why = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local t = now()
local h = P .. 't:' .. id
local f = redis.call('HMGET', h, 'status', 'seq', 'prio')
if not FINAL[f[1] or ''] or f[1] == 'succeeded' then return 0 end
redis.call('HINCRBY', h, 'attempt', 1)
redis.call('HSET', h, 'failures', 0, 'node', node, 'node_name', name, 'why', why, 'not_before', 0, 'lease', '',
           'started', '', 'finished', '', 'result', '', 'error', '', 'cancel', 0)
if node == '' then
  set_status(id, f[1], 'pending', f[2])
  redis.call('ZADD', P .. 'pending', (3 - tonumber(f[3])) * 1e13 + tonumber(f[2]), id)
else
  set_status(id, f[1], 'assigned', f[2])
  place(id, node, tonumber(f[3]), tonumber(f[2]), 0, t)
end
return 1
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
