-- The attempt holding token ARGV[3] ended.
-- ARGV: prefix, id, token, now_ms, outcome ('succeeded'|'failed'|'retry'), value
--       (result JSON or error JSON), due_ms (for 'retry'), history entry JSON
-- Returns {'ok', new_state} or {'lost', state} when the attempt no longer owns the job
-- (canceled, or reaped by the janitor): its outcome is then dropped.
local id, now, outcome = ARGV[2], tonumber(ARGV[4]), ARGV[5]
local key = K.job(id)
local r = redis.call('HMGET', key, 'state', 'token')
if r[1] ~= 'running' or r[2] ~= ARGV[3] then return {'lost', r[1] or 'missing'} end
redis.call('ZREM', K.running, id)
redis.call('HDEL', key, 'token', 'lease_until')
release_slot(id, key)
push_history(key, ARGV[8])
if outcome == 'succeeded' then
  redis.call('HSET', key, 'result', ARGV[6], 'finished_at', now)
  move_state(id, key, 'running', 'succeeded')
  count('succeeded', key)
  expire_finished(id, key, now)
  return {'ok', 'succeeded'}
elseif outcome == 'failed' then
  redis.call('HSET', key, 'error', ARGV[6], 'finished_at', now)
  move_state(id, key, 'running', 'failed')
  count('failed', key)
  expire_finished(id, key, now)
  return {'ok', 'failed'}
end
redis.call('HSET', key, 'error', ARGV[6], 'due_at', ARGV[7])
redis.call('HINCRBY', key, 'dispatch', 1)
redis.call('ZADD', K.schedule, tonumber(ARGV[7]), id)
move_state(id, key, 'running', 'retrying')
count('retried', key)
return {'ok', 'retrying'}
