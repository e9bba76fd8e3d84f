-- A worker is about to run dispatch number ARGV[3] of job ARGV[2].
-- ARGV: prefix, id, dispatch, worker, now_ms, lease_ms, token
-- Returns {'ok', task, payload, attempts, max_attempts, delays, workflow_id, profile,
-- limit_key}, or {'limited', due_ms} (over a limit or paused: back on the schedule), or
-- {'missing'} / {'finished', state} / {'stale', dispatch} / {'duplicate'}.
local id, dispatch, now = ARGV[2], ARGV[3], tonumber(ARGV[5])
local key = K.job(id)
-- Every field this script may need, in one read: a claim is on every job's start path.
local r = redis.call('HMGET', key, 'state', 'dispatch', 'lease_until', 'attempts',
  'max_attempts', 'token', 'profile', 'created_at', 'waiting', 'task', 'payload', 'delays',
  'workflow_id', 'backend', 'limit_key', 'cost', 'released')
local state = r[1]
if not state then return {'missing'} end
if state == 'succeeded' or state == 'failed' or state == 'canceled' then return {'finished', state} end
if r[2] ~= dispatch then return {'stale', r[2] or ''} end
local attempts, max = tonumber(r[4] or '0'), tonumber(r[5] or '1')
local profile, created = r[7], r[8]
local function granted(n)
  return {'ok', r[10], r[11], n, max, r[12] or '', r[13] or '', profile or '', r[15] or ''}
end
if state == 'running' and r[6] == ARGV[7] then
  -- This claim again (its first reply was lost to a dropped connection): same answer.
  return granted(attempts)
end
if state == 'running' then
  -- Same dispatch delivered again: a ghost copy while the first still runs, or a
  -- redelivery after its worker died (lease lapsed).
  if tonumber(r[3] or '0') > now then return {'duplicate'} end
  redis.call('ZREM', K.running, id)
  local was = redis.call('HMGET', key, 'worker', 'started_at')
  local lost = worker_lost(key, attempts, was[1], was[2], now)
  if attempts >= max then
    redis.call('HDEL', key, 'worker')
    end_job(id, key, state, 'failed', now, 'error', lost)
    return {'finished', 'failed'}
  end
elseif state ~= 'queued' then
  return {'stale', r[2] or ''}
end
local lease = now + tonumber(ARGV[6])
-- Over a limit or paused: back to the router's schedule, holding no worker slot. The
-- engine message is spent; a new dispatch is sent when the job may start.
local function wait_until(wait, why)
  redis.call('HINCRBY', key, 'dispatch', 1)
  redis.call('HSET', key, 'due_at', wait, 'waiting', why)
  redis.call('ZADD', K.schedule, wait, id)
  move_state(id, key, state, 'scheduled')
  return {'limited', tostring(wait)}
end
-- Over a limit of a profile with per-key limits: to the back of its key's queue, from
-- which take_due starts jobs round the keys as room frees (fair share). Workflow members
-- keep the schedule: their canvas brings them back.
local lkey, cost = r[15] or '', tonumber(r[16] or '') or 1
local function wait_in_line()
  redis.call('HINCRBY', key, 'dispatch', 1)
  redis.call('HSET', key, 'waiting', 'limit')
  redis.call('HDEL', key, 'due_at', 'released')
  redis.call('ZADD', K.waiting(profile, lkey), created, id)
  redis.call('ZADD', K.waiting_keys(profile), 'NX', 0, lkey)
  redis.call('SADD', K.fair_profiles, profile)
  move_state(id, key, state, 'scheduled')
  return {'limited', tostring(now + 500)}
end
local cap, rcount, rper, kcap, kcount, kper, keyed, paused, budget, bper, kbudget, price,
  weighted, key_pauses = limits(profile)
keyed = keyed and (r[13] or '') == ''
if cost > 1 and not weighted then  -- from now on the rate logs keep units, not starts
  redis.call('HSET', K.limits(profile), 'weighted', '1')
  weighted = true
end
local held, why = paused_until(profile, key_pauses and lkey or nil, now, paused or false),
  'paused'
if not held and budget then
  -- Spent: wait for the next window, looking again every 30 s (a raised budget).
  held, why = over_budget(profile, lkey, now, budget, bper, kbudget), 'budget'
  if held then held = math.min(held, now + 30000) end
end
if held then
  if cap then redis.call('ZREM', K.slots(profile), id) end
  if keyed then redis.call('ZREM', K.key_slots(profile, lkey), id) end
  return wait_until(held, why)
end
if cap or rcount or keyed then
  local slots = K.slots(profile)
  -- A redelivery after a death, or a start take_due reserved, re-acquires below.
  redis.call('ZREM', slots, id)
  local room, wait = headroom(profile, now, cap, rcount, rper, cost, weighted)
  if keyed then
    redis.call('ZREM', K.key_slots(profile, lkey), id)
    local kroom = key_headroom(profile, lkey, now, kcap, kcount, kper, cost, weighted)
    -- Not released from the line while others wait in it: behind them, not ahead.
    if (room ~= nil and room <= 0) or (kroom ~= nil and kroom <= 0)
       or (r[17] ~= '1' and redis.call('EXISTS', K.waiting_keys(profile)) == 1) then
      return wait_in_line()
    end
    if kcap then redis.call('ZADD', K.key_slots(profile, lkey), lease, id) end
    if kcount then
      rate_add(K.key_rate(profile, lkey), K.key_rate_used(profile, lkey), now, kper,
        id .. ':' .. (attempts + 1) .. ':' .. cost, cost, true)
    end
  elseif room ~= nil and room <= 0 then
    return wait_until(wait, 'limit')
  end
  if cap then redis.call('ZADD', slots, lease, id) end
  if rcount then
    -- Every entry is at most now: the window's keys can go once the last one is stale.
    rate_add(K.rate(profile), K.rate_used(profile), now, math.ceil(rper),
      id .. ':' .. (attempts + 1) .. ':' .. cost, cost, true)
  end
end
if r[17] then redis.call('HDEL', key, 'released') end
-- A budget priced per unit of declared cost is charged as the call starts.
if budget and price then charge(key, profile, lkey, cost * price, now, bper, kbudget) end
if r[9] then redis.call('HDEL', key, 'waiting') end
redis.call('HSET', key, 'state', 'running', 'attempts', attempts + 1, 'started_at', now,
  'worker', ARGV[4], 'lease_until', lease, 'token', ARGV[7])
redis.call('ZADD', K.running, lease, id)
if r[14] then redis.call('ZREM', K.dispatching(r[14]), id) end  -- it reached its engine
move_index(id, key, state, 'running', created)
return granted(attempts + 1)
