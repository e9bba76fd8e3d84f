-- Jobs whose lease lapsed: their worker died. Retry them if attempts remain, else fail.
-- ARGV: prefix, now_ms, limit
-- Returns a flat list: id, outcome ('retrying'|'failed'), ...
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for _, id in ipairs(redis.call('ZRANGE', K.running, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)) do
  redis.call('ZREM', K.running, id)
  local key = K.job(id)
  local r = redis.call('HMGET', key, 'state', 'lease_until', 'attempts', 'max_attempts', 'worker', 'started_at')
  if r[1] == 'running' and tonumber(r[2] or '0') <= now then
    local attempts, max = tonumber(r[3] or '0'), tonumber(r[4] or '1')
    local err = cjson.encode({type = 'WorkerLost', message = 'worker ' .. (r[5] or '?') ..
      ' stopped renewing the lease of attempt ' .. attempts .. ' (it died or hung)'})
    redis.call('HDEL', key, 'token', 'lease_until')
    release_slot(id, key)
    push_history(key, cjson.encode({attempt = attempts, worker = r[5], started_at = tonumber(r[6]),
      finished_at = now, error = cjson.decode(err)}))
    if attempts < max then
      redis.call('HSET', key, 'error', err, 'due_at', now)
      redis.call('HINCRBY', key, 'dispatch', 1)
      redis.call('ZADD', K.schedule, now, id)
      move_state(id, key, 'running', 'retrying')
      count('retried', key)
      table.insert(out, id); table.insert(out, 'retrying')
    else
      redis.call('HSET', key, 'error', err, 'finished_at', now)
      move_state(id, key, 'running', 'failed')
      count('failed', key)
      expire_finished(id, key, now)
      table.insert(out, id); table.insert(out, 'failed')
    end
  end
end
return out
