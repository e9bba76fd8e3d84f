-- Marks a workflow as being canceled, so that no member starts another one from now on.
-- ARGV: prefix, workflow_id, now_ms
-- Returns {'ok', members JSON, mode} / {'missing'} / {'finished', state}.
local wk = K.workflow(ARGV[2])
local w = redis.call('HMGET', wk, 'state', 'members', 'mode')
if not w[1] then return {'missing'} end
if finished(w[1]) then return {'finished', w[1]} end
redis.call('HSETNX', wk, 'cancel_requested', ARGV[3])
return {'ok', w[2], w[3]}
