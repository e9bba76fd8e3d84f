-- A job's engine message was canceled outside taskrouter (a Celery revoke from Flower or
-- `celery control revoke`): the job ends canceled, saying so, if ARGV[3] is still its
-- current dispatch (a revoke of an older copy changes nothing) and it has not ended.
-- ARGV: prefix, id, dispatch, now_ms, message
-- Returns {'ok', previous_state} or {'missing'} / {'finished', state} / {'stale', dispatch}.
local id, dispatch, now, message = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local key = K.job(id)
local r = redis.call('HMGET', key, 'state', 'backend', 'dispatch')
if not r[1] then return {'missing'} end
if r[1] == 'succeeded' or r[1] == 'failed' or r[1] == 'canceled' then return {'finished', r[1]} end
if (r[3] or '1') ~= dispatch then return {'stale', r[3] or ''} end
redis.call('ZREM', K.schedule, id)
if r[2] then redis.call('ZREM', K.dispatching(r[2]), id) end
redis.call('ZREM', K.running, id)
end_job(id, key, r[1], 'canceled', now, 'error', cjson.encode({type = 'Canceled', message = message}))
return {'ok', r[1]}
