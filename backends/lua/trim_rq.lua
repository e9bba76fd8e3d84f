-- Trims RQ's registries of this policy's queues, at most `limit` entries per registry:
-- by score (the finished and failed registries score an entry by when its RQ job
-- expires, in epoch seconds: RQ removes those only in a worker's maintenance, every
-- 10 minutes), or, for the canceled registry (scored by when it was canceled, and never
-- cleaned by RQ), when its RQ job hash is gone. RQ's key names come from Python
-- (backends/trim.py, checked against RQ's classes), which K does not name.
-- ARGV: prefix, now_s, limit, rq job-hash prefix, n (how many by score), then the
-- registries: n by score, the rest by their job hash. Returns how many entries went.
local now, limit, job_prefix, n = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local removed = 0
for i = 6, #ARGV do
  local key = ARGV[i]
  if i < 6 + n then
    local old = redis.call('ZRANGE', key, 0, now, 'BYSCORE', 'LIMIT', 0, limit)
    if #old > 0 then removed = removed + redis.call('ZREM', key, unpack(old)) end
  else
    for _, nid in ipairs(redis.call('ZRANGE', key, 0, now, 'BYSCORE', 'LIMIT', 0, limit)) do
      if redis.call('EXISTS', job_prefix .. nid) == 0 then
        removed = removed + redis.call('ZREM', key, nid)
      end
    end
  end
end
return removed
