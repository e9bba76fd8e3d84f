-- Writes every member record of a new workflow and the workflow record in one step: all
-- members are visible (queued or scheduled) from the start, and a crash leaves the whole
-- workflow or nothing. Members in state 'queued' (those that wait for nothing) also go
-- into the dispatching set, so that the janitor's pump sends any this client does not.
-- ARGV: prefix, workflow_id, now_ms, unfinished_ttl_ms, entry_dispatch_at_ms,
--       n, n workflow fields and values (alternating),
--       then per member: id, n, n fields and values.
-- The record and index writes mirror create.lua.
local wid, now = ARGV[2], tonumber(ARGV[3])
local ttl, entry_at, n = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local wk = wkey(wid)
redis.call('HSET', wk, unpack(ARGV, 7, 6 + n))
redis.call('PEXPIRE', wk, ttl)
redis.call('ZADD', ACTIVE, now, wid)
local i = 7 + n
while i <= #ARGV do
  local id, nfields = ARGV[i], tonumber(ARGV[i + 1])
  local key = jkey(id)
  redis.call('HSET', key, unpack(ARGV, i + 2, i + 1 + nfields))
  redis.call('PEXPIRE', key, ttl)
  local f = redis.call('HMGET', key, 'state', 'profile', 'backend', 'task')
  redis.call('ZADD', prefix .. ':idx:all', now, id)
  redis.call('ZADD', idx('state', f[1]), now, id)
  redis.call('ZADD', idx('profile', f[2]), now, id)
  redis.call('ZADD', idx('backend', f[3]), now, id)
  redis.call('ZADD', idx('task', f[4]), now, id)
  count('submitted', key)
  if f[1] == 'queued' then redis.call('ZADD', prefix .. ':dispatching', entry_at, id) end
  i = i + 2 + nfields
end
return wid
