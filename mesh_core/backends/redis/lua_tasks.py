"""Task scripts: every fenced task transition is one atomic script (enqueue, claim, renew, complete, the moves,
the sweep's read of stranded work, cancel, replay), plus retention and the task list."""

from ...tasks import Move, lua_moves
from .lua_common import COMMON

ENQUEUE = COMMON + r"""
-- Returns per item 0 (its node is full), 1 (stored) or 2 (the id was already stored: left as it is).
-- ARGV: P, the calling node, then per item one msgpack array of strings: id, node ('' = pending), node_name,
--       capacity, prio, delay (seconds held back), why, spec, submitter, submitted_at, parent, signature (one
--       argument per task)
-- A task for another node with a free slot and nothing queued starts here: its lease is granted now and the task itself
-- is the node's wake-up ('T' + its id and fields), so the worker's first contact is running it (no claim). The
-- node said what it can take at its last claim (``grants``: slots, lease seconds, good until); a wake-up lost
-- on the way is made good by that claim (``granted``).
-- Each command a script sends costs the server some µs besides its own work, so: the items are read (and a
-- malformed one refused) before anything is written; their seqs come from one INCRBY; a node's queues are
-- counted once per call (its depth and its free slots both come from that count); a task is written by one
-- HSET, and the fields of one started here are the ones written (no read back).
mesh_sets()
hash_key(P .. 'grants')
local t = now()
local caller = ARGV[2]
local items, bad = read_items(3, 11, function(a)
  return tonumber(a[4]) and prio_of(tonumber(a[5])) and (a[12] == nil or type(a[12]) == 'string')
end)
if not items then return redis.error_reply('ENQUEUE: item ' .. bad .. ' is not a task') end
local seq = redis.call('INCRBY', P .. 'seq', #items) - #items
local out = {}
local woken = {}
local queues = {}  -- node -> {inbox, delayed, held} as counted at its first item (nothing written there before)
local depths = {}
local slots = {}  -- node -> {free slots, lease seconds}, or false: it starts nothing here
local pushed = {}  -- node -> {id, fields, id, fields, ...}: the tasks started for it
local function queued(node)
  local q = queues[node]
  if q == nil then
    q = {card('ZCARD', P .. 'inbox:' .. node), card('ZCARD', P .. 'delayed:' .. node),
         card('SCARD', P .. 'held:' .. node)}
    queues[node] = q
  end
  return q
end
local function slots_of(node)
  -- A node's inbox and held set are written only once it has a slot answer here, so its first count holds.
  if slots[node] == nil then
    slots[node] = false
    local g = redis.call('HGET', P .. 'grants', node)
    local cap, lease, fresh
    if g then cap, lease, fresh = string.match(g, '^(%S+) (%S+) (%S+)$') end
    cap, lease, fresh = num(cap), num(lease), num(fresh)
    local q = queued(node)
    if cap and lease and lease > 0 and fresh and fresh > t and node ~= caller and q[1] == 0 then
      local free = cap - q[3]
      if free > 0 then slots[node] = {free, lease} end
    end
  end
  return slots[node]
end
local function text(n)
  -- a number as the text a script's number argument is stored as (every digit a double needs)
  return string.format('%.17g', n)
end
for _, a in ipairs(items) do
  seq = seq + 1
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
      if not depths[node] then
        local q = queued(node)
        depths[node] = q[1] + q[2] + q[3]
      end
      full = depths[node] >= cap
    end
    if full then
      table.insert(out, 0)
    else
      local start = node ~= '' and nb == 0 and slots_of(node)
      if start and start[1] <= 0 then start = false end
      local status = (node == '') and 'pending' or (start and 'running' or 'assigned')
      local fields = {'spec', spec, 'node', node, 'node_name', name, 'attempt', '1', 'failures', '0',
                      'prio', text(prio), 'seq', text(seq), 'submitter', sub, 'why', why, 'not_before', text(nb),
                      'submitted', at, 'parent', parent, 'cancel', '0', 'status', status, 'sig', sig}
      if start then
        table.insert(fields, 'started')
        table.insert(fields, text(t))
        table.insert(fields, 'lease')
        table.insert(fields, text(t + start[2]))
      end
      redis.call('HSET', h, unpack(fields))
      index_status(id, nil, status, seq)
      redis.call('LPUSH', P .. 'tasks', id)  -- newest first; a list is cheaper than an index
      if parent ~= '' then redis.call('SADD', P .. 'ch:' .. parent, id) end
      if node == '' then
        redis.call('ZADD', P .. 'pending', (3 - prio) * 1e13 + seq, id)
      elseif start then
        start[1] = start[1] - 1
        depths[node] = depths[node] + 1
        redis.call('SADD', P .. 'held:' .. node, id)
        redis.call('ZADD', P .. 'leases', t + start[2], id)
        redis.call('ZADD', P .. 'granted:' .. node, t, id)
        pushed[node] = pushed[node] or {}
        table.insert(pushed[node], id)
        table.insert(pushed[node], fields)  -- what HGETALL would give: the hash is new, these are its fields
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
for node, tasks in pairs(pushed) do
  redis.call('PUBLISH', P .. 'wake:' .. node, 'T' .. cmsgpack.pack(tasks))
end
return {out, Q}
"""

CLAIM = COMMON + lua_moves(Move.CLAIM, Move.CANCELLED) + r"""
-- ARGV: P, node, limit, lease_seconds, then the ids of the tasks started here whose wake-up this node took since
-- its last claim (answered first: none of them is handed on again nor ended as never run below). Returns in how
-- many seconds the earliest task still held back becomes due ('' when none), how many of the tasks that follow
-- are handed on again, this server's time, then id, {field, value, ...} per task (those handed on again first).
-- Also says what this node can take (``grants``, for ENQUEUE to start tasks here) and hands on again the tasks
-- started here whose wake-up has not been answered for GRANT_LOST seconds or a quarter of the lease (a pub/sub
-- message is not delivered for sure, and a late one is not run): the worker drops one it already runs. One whose
-- cancel was asked meanwhile ends cancelled: it never ran.
local node, limit, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
mesh_sets()
hash_key(P .. 'grants')
local t = now()
local slots = limit + card('SCARD', P .. 'held:' .. node)
redis.call('HSET', P .. 'grants', node, tostring(slots) .. ' ' .. tostring(lease) .. ' ' .. tostring(t + GRANT_FRESH))
local again = {}
for i = 5, #ARGV, 500 do
  redis.call('ZREM', P .. 'granted:' .. node, unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
if card('ZCARD', P .. 'granted:' .. node) > 0 then
  local unanswered = t - math.min(GRANT_LOST, lease / 4)  -- well before the lease granted with it lapses
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'granted:' .. node, '-inf', unanswered)) do
    redis.call('ZREM', P .. 'granted:' .. node, id)
    local f = tfields(id, 'status', 'node', 'cancel', 'seq')
    if f[1] == 'running' and f[2] == node and f[3] == '1' and FROM.cancelled[f[1]] and num(f[4]) then
      unhold(id, node)
      set_status(id, f[1], 'cancelled', f[4])
      redis.call('HSET', P .. 't:' .. id, 'error', 'cancelled before it ran')
      finish(id, t)
    elseif f[1] == 'running' and f[2] == node then
      redis.call('HSET', P .. 't:' .. id, 'lease', t + lease)
      redis.call('ZADD', P .. 'leases', t + lease, id)
      table.insert(again, id)
    end
  end
end
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
local out = {later[2] and tostring(math.max(0, tonumber(later[2]) - t)) or '', #again, tostring(t)}
for _, id in ipairs(again) do
  table.insert(out, id)
  table.insert(out, redis.call('HGETALL', P .. 't:' .. id))
end
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
-- Every item is read (a malformed one refuses the call) before anything is written.
mesh_sets()
local t = now()
local items, bad = read_items(2, 6)
if not items then return redis.error_reply('COMPLETE: item ' .. bad .. ' is not an outcome') end
local out = {}
for _, a in ipairs(items) do
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
    redis.call('SREM', P .. 'held:' .. node, id)  -- a running task is only held and leased (and maybe granted)
    redis.call('ZREM', P .. 'granted:' .. node, id)
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
