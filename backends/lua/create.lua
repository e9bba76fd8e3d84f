-- ARGV: prefix, id, created_ms, unfinished_ttl_ms, idem_key ('' for none), idem_ttl_ms,
--       field1, value1, ...  (must include state, profile, backend, task)
-- Returns the id of the job now holding the idempotency key (this one, or an earlier one).
local id, created = ARGV[2], tonumber(ARGV[3])
local idem = ARGV[5]
if idem ~= '' then
  local holder = redis.call('GET', idem)
  if holder and redis.call('EXISTS', jkey(holder)) == 1 then return holder end
  redis.call('SET', idem, id, 'PX', ARGV[6])
end
local key = jkey(id)
redis.call('HSET', key, unpack(ARGV, 7))
redis.call('PEXPIRE', key, ARGV[4])
local f = redis.call('HMGET', key, 'state', 'profile', 'backend', 'task')
redis.call('ZADD', prefix .. ':idx:all', created, id)
redis.call('ZADD', idx('state', f[1]), created, id)
redis.call('ZADD', idx('profile', f[2]), created, id)
redis.call('ZADD', idx('backend', f[3]), created, id)
redis.call('ZADD', idx('task', f[4]), created, id)
count('submitted', key)
if f[1] == 'scheduled' then
  redis.call('ZADD', prefix .. ':schedule', tonumber(redis.call('HGET', key, 'due_at')), id)
end
return id
