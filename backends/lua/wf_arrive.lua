-- A native Celery canvas delivered dispatch ARGV[3] of member ARGV[2]: make it claimable.
-- Celery sends a step once its predecessors returned, and a retry after its countdown;
-- until then the record says 'scheduled' (waiting for a dependency) or 'retrying'.
-- ARGV: prefix, id, dispatch, now_ms
-- Returns {'ok', state_before} / {'waiting'} (its dependencies are not all counted) /
-- {'missing'} / {'finished', state} / {'stale', dispatch}.
local id, dispatch, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local key = K.job(id)
local r = redis.call('HMGET', key, 'state', 'dispatch', 'wf_wait')
if not r[1] then return {'missing'} end
if finished(r[1]) then return {'finished', r[1]} end
if r[2] ~= dispatch then return {'stale', r[2] or ''} end
if r[1] == 'scheduled' or r[1] == 'retrying' then
  if tonumber(r[3] or '0') > 0 then return {'waiting'} end
  redis.call('ZREM', K.schedule, id)  -- the router's fallback is not needed
  redis.call('HSET', key, 'queued_at', now)
  redis.call('HDEL', key, 'due_at')
  move_state(id, key, r[1], 'queued')
end
return {'ok', r[1]}
