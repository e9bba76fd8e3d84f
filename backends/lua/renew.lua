-- ARGV: prefix, now_ms, lease_ms, id1, token1, id2, token2, ...
-- Extends the lease of each job still owned by its token; returns the ids no longer owned.
local lease = tonumber(ARGV[2]) + tonumber(ARGV[3])
local lost = {}
for i = 4, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = K.job(id)
  if redis.call('HGET', key, 'token') == token then
    redis.call('HSET', key, 'lease_until', lease)
    redis.call('ZADD', K.running, lease, id)
    local f = redis.call('HMGET', key, 'profile', 'limit_key')
    redis.call('ZADD', K.slots(f[1]), 'XX', lease, id)
    redis.call('ZADD', K.key_slots(f[1], f[2] or ''), 'XX', lease, id)
  else
    table.insert(lost, id)
  end
end
return lost
