-- Shared helpers, prepended to every script. KEYS are not used: all keys derive from
-- the prefix in ARGV[1], so the scripts assume a single (non-cluster) Redis.
local prefix = ARGV[1]
local function jkey(id) return prefix .. ':job:' .. id end
local function idx(field, value) return prefix .. ':idx:' .. field .. ':' .. value end

local function move_state(id, key, old, new)
  local score = redis.call('HGET', key, 'created_at')
  if old and old ~= '' then redis.call('ZREM', idx('state', old), id) end
  redis.call('ZADD', idx('state', new), score, id)
  redis.call('HSET', key, 'state', new)
end

local function count(event, key)
  local f = redis.call('HMGET', key, 'profile', 'backend', 'queue', 'task')
  redis.call('HINCRBY', prefix .. ':counters',
    event .. '|' .. (f[1] or '') .. '|' .. (f[2] or '') .. '|' .. (f[3] or '') .. '|' .. (f[4] or ''), 1)
end

-- A finished record lives keep_ms more; its index entries go with it (janitor sweep).
local function expire_finished(id, key, now)
  local keep = tonumber(redis.call('HGET', key, 'keep_ms') or '86400000')
  redis.call('PEXPIRE', key, keep)
  redis.call('ZADD', prefix .. ':expiry', now + keep, id)
end

local function push_history(key, entry)
  local h = redis.call('HGET', key, 'history')
  local list = (h and h ~= '') and cjson.decode(h) or {}
  table.insert(list, cjson.decode(entry))
  redis.call('HSET', key, 'history', cjson.encode(list))
end
