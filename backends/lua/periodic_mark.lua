-- Records that a schedule's tick was taken, by whichever janitor got there: last_tick
-- only moves forward, so a late pass of a slower janitor cannot move it back.
-- ARGV: prefix, name, tick_ms, job_id ('' when the tick was passed without a job), now_ms
-- Returns 1 when the tick moved the schedule forward, 0 when it had been taken already.
local key = K.periodic(ARGV[2])
local tick = tonumber(ARGV[3])
local f = redis.call('HMGET', key, 'last_tick', 'last_run_tick')
if ARGV[4] ~= '' and tick > (tonumber(f[2]) or -1) then
  redis.call('HSET', key, 'last_job', ARGV[4], 'last_run', ARGV[5], 'last_run_tick', tick)
end
if tick <= (tonumber(f[1]) or -1) then return 0 end
redis.call('HSET', key, 'last_tick', tick)
return 1
