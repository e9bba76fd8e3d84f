-- The attempt holding token ARGV[3] ended.
-- ARGV: prefix, id, token, now_ms, outcome ('succeeded'|'failed'|'retry'|'later'), value
--       (result JSON or error JSON), due_ms (for 'retry' and 'later'), history entry
--       JSON, pause ('none'|'key'|'profile', for 'later'), max_waits (for 'later'),
--       sketch size, sketch ttl_ms (the run time sketches of adaptive routing; 0: none)
-- 'later' (the task raised RetryAfter): the job waits 'scheduled' until due_ms without
-- using an attempt, and pauses its key or profile until then when asked; after
-- max_waits of them it fails with the RetryAfter as its error. Its attempt is no run
-- of the task's to learn a run time from: the sketches leave it out.
-- Returns {'ok', new_state} or {'lost', state} when the attempt no longer owns the job
-- (canceled, or reaped by the janitor): its outcome is then dropped.

-- The attempt of a record that ended now ran since its started_at: its run time goes
-- to the front of its profile's and its task's sketches, capped at size entries each.
local function observe_runtime(key, now, size, ttl)
  if size <= 0 then return end
  local f = redis.call('HMGET', key, 'started_at', 'profile', 'task')
  local started = tonumber(f[1] or '')
  if not started or not f[2] then return end
  local took = math.max(0, now - started)
  for _, list in ipairs({K.runtimes(f[2]), K.task_runtimes(f[2], f[3] or '')}) do
    redis.call('LPUSH', list, took)
    redis.call('LTRIM', list, 0, size - 1)
    redis.call('PEXPIRE', list, ttl)
  end
  redis.call('SADD', K.runtime_tasks(f[2]), f[3] or '')
  redis.call('PEXPIRE', K.runtime_tasks(f[2]), ttl)
end

local id, now, outcome = ARGV[2], tonumber(ARGV[4]), ARGV[5]
local key = K.job(id)
local r = redis.call('HMGET', key, 'state', 'token')
if r[1] ~= 'running' or r[2] ~= ARGV[3] then return {'lost', r[1] or 'missing'} end
-- The first write is a removal, which a Redis at maxmemory does not refuse; after it,
-- Redis lets the script complete: a job that ends while Redis is full still gets its
-- end written (README, "Redis memory"; tests/integration/test_redis_full.py).
redis.call('ZREM', K.running, id)
push_history(key, ARGV[8])
if outcome ~= 'later' then
  observe_runtime(key, now, tonumber(ARGV[11] or '0'), tonumber(ARGV[12] or '0'))
end
if outcome == 'succeeded' then
  end_job(id, key, 'running', 'succeeded', now, 'result', ARGV[6])
  return {'ok', 'succeeded'}
elseif outcome == 'failed' then
  end_job(id, key, 'running', 'failed', now, 'error', ARGV[6])
  return {'ok', 'failed'}
end
if outcome == 'later' then
  if redis.call('HINCRBY', key, 'waits', 1) > tonumber(ARGV[10]) then
    end_job(id, key, 'running', 'failed', now, 'error', ARGV[6])
    return {'ok', 'failed'}
  end
  local due = tonumber(ARGV[7])
  redis.call('HINCRBY', key, 'attempts', -1)
  redis.call('HSET', key, 'due_at', due, 'waiting', 'retry_after')
  redis.call('HDEL', key, 'token', 'lease_until')
  release_slot(id, key)
  redis.call('HINCRBY', key, 'dispatch', 1)
  redis.call('ZADD', K.schedule, due, id)
  move_state(id, key, 'running', 'scheduled')
  if ARGV[9] == 'key' or ARGV[9] == 'profile' then
    local f = redis.call('HMGET', key, 'profile', 'limit_key')
    pause(f[1], f[2], ARGV[9], due, now)
  end
  count('waited', key)
  return {'ok', 'scheduled'}
end
schedule_retry(id, key, 'running', ARGV[6], ARGV[7])
return {'ok', 'retrying'}
