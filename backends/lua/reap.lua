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
    local err = worker_lost(key, attempts, r[5], r[6], now)
    if attempts < max then
      schedule_retry(id, key, 'running', err, now)
      table.insert(out, id); table.insert(out, 'retrying')
    else
      end_job(id, key, 'running', 'failed', now, 'error', err)
      table.insert(out, id); table.insert(out, 'failed')
    end
  end
end
return out
