-- Removes the index entries of records that have expired, at most `limit` expiry entries.
-- ARGV: prefix, now_ms, limit.  Returns {expiry entries looked at, jobs swept}.
-- An entry whose record still exists is put back at the record's own expiry: its score
-- comes from the client's clock at the finish and the TTL from the server's, a few ms
-- apart, and dropping the entry then would leave the job in every index for good.
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local due = redis.call('ZRANGE', K.expiry, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
local n = 0
for _, member in ipairs(due) do
  local id, profile, backend, state, task = string.match(member, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  local ttl = id and redis.call('PTTL', K.job(id)) or -2
  if ttl ~= -2 then
    -- Still there (for 0 ms more, or -1: someone made it persistent; look again in an hour).
    redis.call('ZADD', K.expiry, now + (ttl >= 0 and ttl + 1 or 3600000), member)
  else
    redis.call('ZREM', K.expiry, member)
  end
  if id and ttl == -2 then
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
return {#due, n}
