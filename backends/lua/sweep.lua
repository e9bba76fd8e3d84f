-- Removes the index entries of records that have expired.
-- ARGV: prefix, now_ms, limit.  Returns how many jobs were swept.
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local n = 0
for _, member in ipairs(redis.call('ZRANGE', K.expiry, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)) do
  redis.call('ZREM', K.expiry, member)
  local id, profile, backend, state, task = string.match(member, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  if id and redis.call('EXISTS', K.job(id)) == 0 then
    redis.call('ZREM', K.index_all, id)
    if state == '*' then
      for _, s in ipairs({'queued', 'scheduled', 'running', 'retrying'}) do
        redis.call('ZREM', K.index_of('state', s), id)
      end
    else
      redis.call('ZREM', K.index_of('state', state), id)
    end
    redis.call('ZREM', K.index_of('profile', profile), id)
    redis.call('ZREM', K.index_of('backend', backend), id)
    redis.call('ZREM', K.index_of('task', task), id)
    n = n + 1
  end
end
return n
