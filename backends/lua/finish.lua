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
push_history(key, ARGV[8])
if outcome == 'succeeded' then
  end_job(id, key, 'running', 'succeeded', now, 'result', ARGV[6])
  return {'ok', 'succeeded'}
elseif outcome == 'failed' then
  end_job(id, key, 'running', 'failed', now, 'error', ARGV[6])
  return {'ok', 'failed'}
end
schedule_retry(id, key, 'running', ARGV[6], ARGV[7])
return {'ok', 'retrying'}
