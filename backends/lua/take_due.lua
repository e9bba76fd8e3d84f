-- Hands out one engine's jobs to send. Due retries and delayed jobs of every engine move
-- from the schedule to 'queued', into their engine's dispatching set; then the jobs of
-- `engine`'s set that are due (just moved, or taken before but never confirmed by their
-- engine) are returned. Each engine's processes call this for their own engine, so a job
-- is sent only by a process that has its engine.
-- A job whose profile is at a global limit stays on the schedule, so waiting jobs hold
-- no worker slot and no engine message; at most the profile's headroom moves at once.
-- ARGV: prefix, now_ms, limit, grace_ms, engine
-- Returns a flat list: id, backend, queue, dispatch, profile, ...
local now, limit, grace, engine = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local out = {}

-- Due jobs, of any engine, from the schedule to queued and into their engine's set (due now).
local function release_due()
  local room = {}
  for _, id in ipairs(redis.call('ZRANGE', K.schedule, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)) do
    local key = K.job(id)
    local f = redis.call('HMGET', key, 'state', 'profile', 'backend', 'limit_key')
    local state, profile = f[1], f[2]
    if state == 'retrying' or state == 'scheduled' then
      if room[profile] == nil then
        local r, wait = headroom(profile, now)
        room[profile] = {r, wait}
      end
      local r, wait = room[profile][1], room[profile][2]
      local held = paused_until(profile, f[4], now)
      if held then
        redis.call('ZADD', K.schedule, held, id)
      elseif r ~= nil and r <= 0 then
        redis.call('ZADD', K.schedule, wait or (now + 250), id)
      else
        if r ~= nil then room[profile][1] = r - 1 end
        redis.call('ZREM', K.schedule, id)
        redis.call('HSET', key, 'queued_at', now)
        redis.call('HDEL', key, 'due_at')
        move_state(id, key, state, 'queued')
        redis.call('ZADD', K.dispatching(f[3]), now, id)
      end
    else
      redis.call('ZREM', K.schedule, id)
    end
  end
end

-- Entries of the single dispatching set of older versions go to their engine's set (due
-- now), so that none is stranded; an entry whose record is gone is dropped.
local function drain_legacy()
  for _, id in ipairs(redis.call('ZRANGE', K.legacy_dispatching, 0, limit - 1)) do
    redis.call('ZREM', K.legacy_dispatching, id)
    local backend = redis.call('HGET', K.job(id), 'backend')
    if backend then redis.call('ZADD', K.dispatching(backend), now, id) end
  end
end

-- The due entries of this engine's set: a job still queued is returned, and handed out
-- again after the grace unless its engine confirms it first (JobStore.dispatched).
local function emit_due()
  local set = K.dispatching(engine)
  for _, id in ipairs(redis.call('ZRANGE', set, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)) do
    local key = K.job(id)
    local f = redis.call('HMGET', key, 'state', 'backend', 'queue', 'dispatch', 'profile')
    if f[1] == 'queued' then
      redis.call('ZADD', set, now + grace, id)
      table.insert(out, id); table.insert(out, f[2]); table.insert(out, f[3])
      table.insert(out, f[4]); table.insert(out, f[5])
    else
      redis.call('ZREM', set, id)
    end
  end
end

release_due()
drain_legacy()
emit_due()
return out
