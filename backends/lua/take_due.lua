-- Moves due retries and delayed jobs from the schedule to 'queued', and returns them
-- (with dispatches that were taken before but never reached their engine) for sending.
-- A job whose profile is at a global limit stays on the schedule, so waiting jobs hold
-- no worker slot and no engine message; at most the profile's headroom is sent at once.
-- ARGV: prefix, now_ms, limit, grace_ms
-- Returns a flat list: id, backend, queue, dispatch, profile, ...
local now, limit, grace = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
local room = {}
local function emit(id, key)
  local f = redis.call('HMGET', key, 'backend', 'queue', 'dispatch', 'profile')
  redis.call('ZADD', K.dispatching, now + grace, id)
  table.insert(out, id); table.insert(out, f[1]); table.insert(out, f[2]); table.insert(out, f[3]); table.insert(out, f[4])
end
for _, id in ipairs(redis.call('ZRANGE', K.schedule, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)) do
  local key = K.job(id)
  local f = redis.call('HMGET', key, 'state', 'profile')
  local state, profile = f[1], f[2]
  if state == 'retrying' or state == 'scheduled' then
    if room[profile] == nil then
      local r, wait = headroom(profile, now)
      room[profile] = {r, wait}
    end
    local r, wait = room[profile][1], room[profile][2]
    if r ~= nil and r <= 0 then
      redis.call('ZADD', K.schedule, wait or (now + 250), id)
    else
      if r ~= nil then room[profile][1] = r - 1 end
      redis.call('ZREM', K.schedule, id)
      redis.call('HSET', key, 'queued_at', now)
      redis.call('HDEL', key, 'due_at')
      move_state(id, key, state, 'queued')
      emit(id, key)
    end
  else
    redis.call('ZREM', K.schedule, id)
  end
end
for _, id in ipairs(redis.call('ZRANGE', K.dispatching, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)) do
  local key = K.job(id)
  if redis.call('HGET', key, 'state') == 'queued' then
    emit(id, key)
  else
    redis.call('ZREM', K.dispatching, id)
  end
end
return out
