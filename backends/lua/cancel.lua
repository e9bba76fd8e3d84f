-- ARGV: prefix, id, now_ms
-- Returns {'ok', previous_state, backend, dispatch} or {'missing'} or {'finished', state}.
local id, now = ARGV[2], tonumber(ARGV[3])
local key = K.job(id)
local r = redis.call('HMGET', key, 'state', 'backend', 'dispatch')
if not r[1] then return {'missing'} end
if r[1] == 'succeeded' or r[1] == 'failed' or r[1] == 'canceled' then return {'finished', r[1]} end
redis.call('ZREM', K.schedule, id)
if r[2] then redis.call('ZREM', K.dispatching(r[2]), id) end
redis.call('ZREM', K.running, id)
end_job(id, key, r[1], 'canceled', now, 'error',
  cjson.encode({type = 'Canceled', message = 'canceled while ' .. r[1]}))
return {'ok', r[1], r[2] or '', r[3] or ''}
