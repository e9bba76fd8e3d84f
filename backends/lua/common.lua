-- Shared helpers, prepended to every script after the key table K (backends/scripts.py).
-- KEYS are not used: every key is K's, built from the prefix in ARGV[1], so the scripts
-- assume a single (non-cluster) Redis.

-- The state index entry of a job moves from old to new; score: its created_at (read
-- from the record when not given). The caller writes the record's own state field.
local function move_index(id, key, old, new, score)
  score = score or redis.call('HGET', key, 'created_at')
  if old and old ~= '' then redis.call('ZREM', K.index_of('state', old), id) end
  redis.call('ZADD', K.index_of('state', new), score, id)
end

-- The job's state moves from old to new: its record and its state index.
local function move_state(id, key, old, new)
  move_index(id, key, old, new)
  redis.call('HSET', key, 'state', new)
end

-- One more `event` (submitted, succeeded, retried...) in the lifetime counters of /metrics.
local function count_fields(event, profile, backend, queue, task)
  redis.call('HINCRBY', K.counters, event .. '|' .. (profile or '') .. '|' .. (backend or '')
    .. '|' .. (queue or '') .. '|' .. (task or ''), 1)
end

-- count_fields with the fields read from the record.
local function count(event, key)
  local f = redis.call('HMGET', key, 'profile', 'backend', 'queue', 'task')
  count_fields(event, f[1], f[2], f[3], f[4])
end

-- A new record (fields f: state, profile, backend, queue, task) enters every index,
-- scored by its creation time, and is counted as submitted. If it never finishes, it
-- expires unfinished after ttl ms: its expiry entry names the state '*', so that the
-- sweep then clears every unfinished state index (expire_finished replaces the entry
-- with one naming the final state).
local function index_new(id, f, created, ttl)
  redis.call('ZADD', K.index_all, created, id)
  redis.call('ZADD', K.index_of('state', f.state), created, id)
  redis.call('ZADD', K.index_of('profile', f.profile), created, id)
  redis.call('ZADD', K.index_of('backend', f.backend), created, id)
  redis.call('ZADD', K.index_of('task', f.task), created, id)
  count_fields('submitted', f.profile, f.backend, f.queue, f.task)
  redis.call('ZADD', K.expiry, created + ttl,
    id .. '|' .. (f.profile or '') .. '|' .. (f.backend or '') .. '|*|' .. (f.task or ''))
end

-- A finished record lives keep_ms more. The expiry entry names every index the job is
-- in, so the janitor's sweep can remove them after the record itself is gone.
local function expire_finished(id, key, now)
  local f = redis.call('HMGET', key, 'keep_ms', 'profile', 'backend', 'task', 'state')
  local keep = tonumber(f[1] or '86400000')
  redis.call('PEXPIRE', key, keep)
  local head, tail = id .. '|' .. (f[2] or '') .. '|' .. (f[3] or '') .. '|', '|' .. (f[4] or '')
  redis.call('ZREM', K.expiry, head .. '*' .. tail)  -- the entry from create
  redis.call('ZADD', K.expiry, now + keep, head .. (f[5] or '') .. tail)
end

-- Limits of a profile (published by every worker from its policy): global, then per
-- limit key, whether its jobs wait in per-key queues (it has a per_key section), its
-- pause, its budget (limit, window, per key, price), whether any of its calls declared a
-- cost ('weighted', set by the first such claim), and whether its keys can be paused.
local function limits(profile)
  local l = redis.call('HMGET', K.limits(profile), 'concurrency', 'rate_count', 'rate_per_ms',
    'key_concurrency', 'key_rate_count', 'key_rate_per_ms', 'keyed', 'paused', 'budget',
    'budget_per_ms', 'key_budget', 'budget_price', 'weighted', 'key_pauses')
  return tonumber(l[1] or ''), tonumber(l[2] or ''), tonumber(l[3] or ''),
    tonumber(l[4] or ''), tonumber(l[5] or ''), tonumber(l[6] or ''), l[7] == '1', l[8],
    tonumber(l[9] or ''), tonumber(l[10] or ''), tonumber(l[11] or ''),
    tonumber(l[12] or ''), l[13] == '1', l[14] == '1'
end

-- The number of the budget window of length per (ms) that holds now, as text.
local function window_of(now, per)
  return string.format('%d', math.floor(now / per))
end

-- A job (record `key`) spent `amount`: its record's 'spend', and, when its profile has a
-- budget (windows of per ms), the profile's spend in this window and its key's.
local function charge(key, profile, lkey, amount, now, per, key_budget)
  redis.call('HINCRBYFLOAT', key, 'spend', amount)
  if not per then return end
  local window = window_of(now, per)
  local spent = K.spend(profile, window)
  redis.call('INCRBYFLOAT', spent, amount)
  redis.call('PEXPIRE', spent, per * 2)
  if key_budget and lkey and lkey ~= '' then
    local kspent = K.key_spend(profile, lkey, window)
    redis.call('INCRBYFLOAT', kspent, amount)
    redis.call('PEXPIRE', kspent, per * 2)
  end
end

-- When the budget window ends (ms) if `profile`, or its key `lkey`, has spent its
-- ceiling in it (budget, key_budget per window of per ms); nil while there is room.
local function over_budget(profile, lkey, now, budget, per, key_budget)
  if not budget or not per then return nil end
  local window = window_of(now, per)
  local over = tonumber(redis.call('GET', K.spend(profile, window)) or '0') >= budget
  if not over and key_budget and lkey and lkey ~= '' then
    over = tonumber(redis.call('GET', K.key_spend(profile, lkey, window)) or '0') >= key_budget
  end
  if over then return (math.floor(now / per) + 1) * per end
  return nil
end

-- The units of one start in a rate log: its entry is <id>:<attempt>:<cost> (entries of
-- older versions, <id>:<attempt>, cost 1).
local function cost_of(entry)
  return tonumber(string.match(entry, '^[^:]*:[^:]*:(.+)$') or '') or 1
end

-- The units started inside the window `per` of rate log `log`: one per entry, plus what
-- weighted starts took beyond one, whose running total `extra` keeps (so that a profile
-- whose calls declare no cost pays one GET more than a plain count). The entries that
-- left the window are dropped and give their extra units back.
local function rate_used(log, extra, now, per)
  if extra == nil then  -- no call of the profile ever declared a cost: one unit each
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now - per)
    return redis.call('ZCARD', log)
  end
  local more = tonumber(redis.call('GET', extra) or '0')
  if more > 0 then
    local freed = 0
    for _, e in ipairs(redis.call('ZRANGE', log, '-inf', now - per, 'BYSCORE')) do
      freed = freed + cost_of(e) - 1
    end
    if freed > 0 then more = redis.call('DECRBY', extra, freed) end
  end
  redis.call('ZREMRANGEBYSCORE', log, '-inf', now - per)
  return redis.call('ZCARD', log) + more
end

-- A start of `cost` units enters rate log `log` (and `extra`, past its first unit).
-- `expiring`: the log too expires a window after the last start, so that idle keys (tenants)
-- leave nothing behind.
local function rate_add(log, extra, now, per, entry, cost, expiring)
  redis.call('ZADD', log, now, entry)
  if cost > 1 then  -- it outlives every entry it counts: they leave a window after
    redis.call('INCRBY', extra, cost - 1)
    redis.call('PEXPIRE', extra, per + 1000)
  end
  if expiring then redis.call('PEXPIRE', log, per + 1000) end
end

-- How many more starts (of `cost` units each) a concurrency set and a rate log allow now
-- (nil: no limit), and when the next one may start if none may. Expired slots (their
-- worker died) are given back here. A call costing more than the whole rate starts
-- alone in an empty window.
local function room_in(slots, log, used, now, cap, count, per, cost)
  local room, wait = nil, nil
  if cap then
    redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
    room = cap - redis.call('ZCARD', slots)
    if room <= 0 then wait = now + 250 end
  end
  if count then
    cost = cost or 1
    local spent = rate_used(log, used, now, per)
    local left = 0
    if spent == 0 or spent + cost <= count then
      left = math.max(1, math.floor((count - spent) / cost))
    end
    if room == nil or left < room then room = left end
    if left <= 0 then
      -- When enough of the oldest starts leave the window (the first 100 at most).
      local need, freed, free_at = spent + cost - count, 0, now + 250
      local oldest = redis.call('ZRANGE', log, 0, 99, 'WITHSCORES')
      for i = 1, #oldest, 2 do
        freed = freed + cost_of(oldest[i])
        free_at = tonumber(oldest[i + 1]) + per
        if freed >= need then break end
      end
      if wait == nil or free_at > wait then wait = free_at end
    end
  end
  return room, wait
end

-- How many more jobs of a profile may start now under its global limits (nil: no
-- limit), and when the next start is allowed if none may. cap, rcount, rper: the
-- profile's limits when the caller has read them already; cost: the job's units.
local function headroom(profile, now, cap, rcount, rper, cost, weighted)
  if cap == nil and rcount == nil then
    local l = {limits(profile)}
    cap, rcount, rper, weighted = l[1], l[2], l[3], l[13]
  end
  return room_in(K.slots(profile), K.rate(profile), weighted and K.rate_used(profile) or nil,
    now, cap, rcount, rper, cost)
end

-- The same for one limit key of a profile, under its per-key limits.
local function key_headroom(profile, lkey, now, kcap, kcount, kper, cost, weighted)
  return room_in(K.key_slots(profile, lkey), K.key_rate(profile, lkey),
    weighted and K.key_rate_used(profile, lkey) or nil, now, kcap, kcount, kper, cost)
end

-- Until when (ms) a job of `profile` with limit key `lkey` must wait because its profile
-- or its key is paused (a RetryAfter, or `taskrouter pause`), or nil. A manual pause has
-- no end: its jobs look again every PAUSE_POLL ms, so a resume is seen within that.
-- `held`: the profile's 'paused' field when the caller has read it with its limits.
local PAUSE_POLL = 2000
local function paused_until(profile, lkey, now, held)
  if held == nil then held = redis.call('HGET', K.limits(profile), 'paused') end
  local until_ = (held == 'manual') and (now + PAUSE_POLL) or tonumber(held or '')
  if lkey and lkey ~= '' then
    local q = tonumber(redis.call('GET', K.paused_key(profile, lkey)) or '')
    if q and (until_ == nil or q > until_) then until_ = q end
  end
  if until_ and until_ > now then return until_ end
  return nil
end

-- Jobs of `profile` (or of its key `lkey`, when scope is 'key') wait until `until_`
-- (ms): a pause only grows, so two RetryAfters keep the later end.
local function pause(profile, lkey, scope, until_, now)
  if scope == 'profile' then
    local was = redis.call('HGET', K.limits(profile), 'paused')
    if was == 'manual' or tonumber(was or '0') >= until_ then return end
    redis.call('HSET', K.limits(profile), 'paused', until_)
    return
  end
  local key = K.paused_key(profile, lkey or '')
  local was = tonumber(redis.call('GET', key) or '0')
  if was >= until_ then return end
  redis.call('SET', key, until_, 'PX', math.max(1, until_ - now))
end

-- The job gives back its concurrency slots (global and per key), if it holds them.
local function release_slot(id, key)
  local f = redis.call('HMGET', key, 'profile', 'limit_key')
  if f[1] then
    redis.call('ZREM', K.slots(f[1]), id)
    redis.call('ZREM', K.key_slots(f[1], f[2] or ''), id)
  end
end

-- One more attempt (an entry JSON) in the record's history.
local function push_history(key, entry)
  local h = redis.call('HGET', key, 'history')
  local list = (h and h ~= '') and cjson.decode(h) or {}
  table.insert(list, cjson.decode(entry))
  redis.call('HSET', key, 'history', cjson.encode(list))
end

-- The attempt of a worker that stopped renewing its lease (it died or hung) goes into
-- the history as WorkerLost; returns that error as JSON.
local function worker_lost(key, attempt, worker, started_at, now)
  local err = {type = 'WorkerLost', message = 'worker ' .. (worker or '?') ..
    ' stopped renewing the lease of attempt ' .. attempt .. ' (it died or hung)'}
  push_history(key, cjson.encode({attempt = attempt, worker = worker,
    started_at = tonumber(started_at), finished_at = now, error = err}))
  return cjson.encode(err)
end

-- The job ends: state old -> new (succeeded, failed or canceled), with `field` (result
-- or error) set to value. Whatever attempt held it lets go of it (token, lease, slot);
-- the end is counted and the record expires keep_ms from now.
local function end_job(id, key, old, new, now, field, value)
  redis.call('HSET', key, field, value, 'finished_at', now)
  redis.call('HDEL', key, 'token', 'lease_until')
  release_slot(id, key)
  move_state(id, key, old, new)
  count(new, key)
  expire_finished(id, key, now)
end

-- The attempt failed and another one is due at due_ms: the job lets go of the attempt
-- (token, lease, slot), and waits on the router's schedule for a new dispatch (the old
-- one's message is then refused at claim as stale).
local function schedule_retry(id, key, old, err, due_ms)
  redis.call('HSET', key, 'error', err, 'due_at', due_ms)
  redis.call('HDEL', key, 'token', 'lease_until')
  release_slot(id, key)
  redis.call('HINCRBY', key, 'dispatch', 1)
  redis.call('ZADD', K.schedule, due_ms, id)
  move_state(id, key, old, 'retrying')
  count('retried', key)
end

-- A queued Celery job (outside a native canvas, not already being sent, queued at least
-- older_ms ago, and still at dispatch `dispatch` when one is given) gets a new dispatch,
-- which the pump sends. Its old message, wherever it is, is then refused at claim as
-- stale: nothing runs twice. Returns whether it did.
local function redispatch_queued(id, now, older_ms, dispatch)
  local key = K.job(id)
  local f = redis.call('HMGET', key, 'state', 'backend', 'queued_at', 'workflow_id', 'dispatch')
  if f[1] ~= 'queued' or f[2] ~= 'celery' or tonumber(f[3] or '0') > now - older_ms
     or (f[4] and f[4] ~= '') or (dispatch and f[5] ~= dispatch)
     or redis.call('ZSCORE', K.dispatching(f[2]), id) then
    return false
  end
  redis.call('HINCRBY', key, 'dispatch', 1)
  redis.call('HSET', key, 'queued_at', now)
  redis.call('ZADD', K.dispatching(f[2]), now, id)
  return true
end
