-- Adaptive routing moves a profile to another lane, once: only if its route is still the
-- one the caller read (since_ms ARGV[3], '' for none), so that of any number of janitors
-- judging the same figures one switches and the others find the switch made.
-- ARGV: prefix, profile, expected since_ms, backend, lane, queue, long (0|1), now_ms,
--       reason, p90_ms, count
-- Returns 1 when it switched, 0 when the route had changed since it was read.
local profile, now = ARGV[2], tonumber(ARGV[8])
local key = K.route(profile)
local since = redis.call('HGET', key, 'since_ms') or ''
if since ~= ARGV[3] then return 0 end
redis.call('HSET', key, 'backend', ARGV[4], 'lane', ARGV[5], 'queue', ARGV[6], 'long', ARGV[7],
  'since_ms', now, 'reason', ARGV[9], 'p90_ms', ARGV[10], 'count', ARGV[11])
redis.call('HINCRBY', key, 'switches', 1)
count_fields('switched_to_' .. ARGV[5], profile, ARGV[4], ARGV[6], '')
return 1
