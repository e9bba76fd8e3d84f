-- May this delivery of a canvas member continue the Celery canvas (return its result or
-- raise its failure, which sends the next step or counts a chord part)? Only once per
-- member: a ghost copy, or a redelivery after another delivery finished it, must not
-- send the next step twice or count a chord part twice.
-- ARGV: prefix, id
-- Returns {1, state, error} for the first delivery to ask once the member succeeded or
-- failed, else {0, state}.
local key = K.job(ARGV[2])
local r = redis.call('HMGET', key, 'state', 'error')
if (r[1] == 'succeeded' or r[1] == 'failed')
    and redis.call('HSETNX', key, 'wf_continued', '1') == 1 then
  return {1, r[1], r[2] or ''}
end
return {0, r[1] or 'missing'}
