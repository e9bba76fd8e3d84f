-- ARGV: prefix, id, created_ms, unfinished_ttl_ms, idem_key ('' for none), idem_ttl_ms,
--       field1, value1, ...  (must include state, profile, backend, task)
-- Returns the id of the job now holding the idempotency key (this one, or an earlier one).
local id, created = ARGV[2], tonumber(ARGV[3])
local idem = ARGV[5]
if idem ~= '' then
  local holder = redis.call('GET', idem)
  if holder and redis.call('EXISTS', K.job(holder)) == 1 then return holder end
  redis.call('SET', idem, id, 'PX', ARGV[6])
end
local key = K.job(id)
redis.call('HSET', key, unpack(ARGV, 7))
redis.call('PEXPIRE', key, ARGV[4])
-- The fields the indexes and the counter need come from ARGV, not back from the hash
-- just written (two HMGETs fewer on every enqueue); a field ARGV lacks is read as before.
local given = {}
for i = 7, #ARGV - 1, 2 do given[ARGV[i]] = ARGV[i + 1] end
local function field(name)
  local value = given[name]
  if value == nil then value = redis.call('HGET', key, name) end
  return value
end
local state = field('state')
index_new(id, {state = state, profile = field('profile'), backend = field('backend'),
  queue = field('queue'), task = field('task')}, created, tonumber(ARGV[4]))
if state == 'scheduled' then
  redis.call('ZADD', K.schedule, tonumber(field('due_at')), id)
end
return id
