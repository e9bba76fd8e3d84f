-- Writes every member record of a new workflow and the workflow record in one step: all
-- members are visible (queued or scheduled) from the start, and a crash leaves the whole
-- workflow or nothing. Members in state 'queued' (those that wait for nothing) also go
-- into their engine's dispatching set, so that a pump sends any this client does not.
-- ARGV: prefix, workflow_id, now_ms, unfinished_ttl_ms, entry_dispatch_at_ms,
--       n, n workflow fields and values (alternating),
--       then per member: id, n, n fields and values.
local wid, now = ARGV[2], tonumber(ARGV[3])
local ttl, entry_at, n = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local wk = K.workflow(wid)
redis.call('HSET', wk, unpack(ARGV, 7, 6 + n))
redis.call('PEXPIRE', wk, ttl)
redis.call('ZADD', K.active_workflows, now, wid)
local i = 7 + n
while i <= #ARGV do
  local id, nfields = ARGV[i], tonumber(ARGV[i + 1])
  local key = K.job(id)
  redis.call('HSET', key, unpack(ARGV, i + 2, i + 1 + nfields))
  redis.call('PEXPIRE', key, ttl)
  local f = redis.call('HMGET', key, 'state', 'profile', 'backend', 'queue', 'task')
  -- As create.lua: indexed, counted, and swept should it expire unfinished.
  index_new(id, {state = f[1], profile = f[2], backend = f[3], queue = f[4], task = f[5]}, now, ttl)
  if f[1] == 'queued' then redis.call('ZADD', K.dispatching(f[3]), entry_at, id) end
  i = i + 2 + nfields
end
return wid
