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

-- The next job of one key's line that still waits (canceled ones are dropped), or nil.
local function next_in_line(profile, lkey)
  local line = K.waiting(profile, lkey)
  for _ = 1, 100 do
    local top = redis.call('ZPOPMIN', line)
    if #top == 0 then return nil end
    local f = redis.call('HMGET', K.job(top[1]), 'state', 'waiting', 'backend')
    if f[1] == 'scheduled' and f[2] == 'limit' then return top[1], f[3] end
  end
  return nil
end

-- Jobs waiting in per-key lines start round the keys (the key given a start longest ago
-- first; a new key before all), as far as the global and per-key limits have room; a
-- key with a weight w (per_key.weights) has w starts in a row before it goes to the back
-- (its credits count them across passes). A start reserves its slots for the grace, so
-- that the next pass does not start the same room again before the claim takes it.
local function release_fair()
  for _, profile in ipairs(redis.call('SMEMBERS', K.fair_profiles)) do
    local turns = K.waiting_keys(profile)
    local lkeys = redis.call('ZRANGE', turns, 0, limit - 1)
    if #lkeys == 0 then
      redis.call('SREM', K.fair_profiles, profile)
    elseif not paused_until(profile, nil, now) then
      local l = {limits(profile)}
      local cap, rcount, rper, kcap, kcount, kper, weighted = l[1], l[2], l[3], l[4], l[5],
        l[6], l[13]
      local w = redis.call('HGET', K.limits(profile), 'weights')
      local weights = w and cjson.decode(w) or {}
      local room = headroom(profile, now, cap, rcount, rper, 1, weighted)
      local given, krooms, more = 0, {}, true
      local function start(id, backend, lkey)
        local key = K.job(id)
        redis.call('HSET', key, 'queued_at', now, 'released', '1')
        move_state(id, key, 'scheduled', 'queued')
        redis.call('ZADD', K.dispatching(backend), now, id)
        if cap then redis.call('ZADD', K.slots(profile), now + grace, id) end
        if kcap then redis.call('ZADD', K.key_slots(profile, lkey), now + grace, id) end
        given, more = given + 1, true
        krooms[lkey] = krooms[lkey] - 1
        if room ~= nil then room = room - 1 end
      end
      while more and (room == nil or room > 0) and given < limit do
        more = false
        for _, lkey in ipairs(lkeys) do
          if krooms[lkey] == nil then
            krooms[lkey] = paused_until(profile, lkey, now) and 0
              or key_headroom(profile, lkey, now, kcap, kcount, kper, 1, weighted) or limit
          end
          local weight = tonumber(weights[lkey] or 1) or 1
          local turn_over = false
          while not turn_over and krooms[lkey] > 0 and (room == nil or room > 0)
                and given < limit do
            local id, backend = next_in_line(profile, lkey)
            if id == nil then
              redis.call('ZREM', turns, lkey)
              redis.call('HDEL', K.waiting_credits(profile), lkey)
              krooms[lkey] = 0
            else
              start(id, backend, lkey)
              local used = weight > 1
                and redis.call('HINCRBY', K.waiting_credits(profile), lkey, 1) or 1
              if used >= weight then
                if weight > 1 then redis.call('HDEL', K.waiting_credits(profile), lkey) end
                redis.call('ZADD', turns, now * 1000 + given, lkey)  -- to the back
                turn_over = true
              end
            end
          end
          if (room ~= nil and room <= 0) or given >= limit then break end
        end
      end
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
release_fair()
drain_legacy()
emit_due()
return out
