-- Follow what happened to queued jobs outside taskrouter (README, "Jobs changed outside
-- taskrouter"). Walks the queued index from a cursor, oldest first, at most `limit`
-- entries created at least older_ms ago, and for each queued record whose dispatch was
-- queued that long ago and that is not waiting in its engine's dispatching set:
--   RQ: reads the RQ job of its current dispatch. Hash missing -> canceled (deleted
--     outside taskrouter, e.g. from rq-dashboard), or sent again if the record says
--     that dispatch never reached RQ (field `sent`, written with RQ's job); RQ status
--     canceled or stopped -> canceled; present but in no RQ queue list (within maxlen of
--     its head) and not begun by an RQ worker in the last older_ms (stuck in a registry
--     after a Redis restart, failed by RQ's cleanup) -> a new dispatch, which the pump
--     sends; the old copy, if it ever runs, is refused at claim as stale.
--   Celery (outside native canvases): returned to the caller, which looks for its
--     message in the broker's lists (backends/reconcile.py).
-- ARGV: prefix, now_ms, older_ms, limit, cursor_id, maxlen, and RQ's key namespaces
-- (reconcile.RQKeys: job, queue, executions, execution), which K does not name.
-- Returns {next_cursor_id, {canceled ids}, {redispatched ids}, {celery: id, dispatch, queue, ...}}
local now, older, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local cursor, maxlen = ARGV[5], tonumber(ARGV[6])
local rq_job, rq_queue, rq_executions, rq_execution = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local idx = K.index_of('state', 'queued')

local start = 0
if cursor ~= '' then
  local rank = redis.call('ZRANK', idx, cursor)
  if rank then
    start = rank + 1
  else  -- it left the index: go on from where its creation time would be
    local score = tonumber(string.sub(cursor, 1, 12), 16) or 0
    start = redis.call('ZCOUNT', idx, '-inf', '(' .. score)
  end
end
local entries = redis.call('ZRANGE', idx, start, start + limit - 1, 'WITHSCORES')

-- Whether an RQ worker began executing this RQ job recently (RQ's execution registry of
-- the job, and each execution's created_at, epoch seconds). An execution begun longer
-- ago whose record is still queued never reached its claim: its worker died, or lost it
-- to a Redis restart (its worker key and execution sets outlive it for minutes). Sending
-- again is safe either way: a late claim of the old copy is refused as stale.
local function is_executing(nid)
  local ids = redis.call('ZRANGE', rq_executions .. nid, 0, -1)
  for _, ex in ipairs(ids) do
    local began = tonumber(redis.call('HGET', rq_execution .. nid .. ':' .. ex, 'created_at') or '0')
    if began and began * 1000 > now - older then return true end
  end
  return false
end

local function end_outside(id, key, message)
  redis.call('ZREM', K.schedule, id)
  redis.call('ZREM', K.running, id)
  end_job(id, key, 'queued', 'canceled', now, 'error',
    cjson.encode({type = 'Canceled', message = message}))
end

local canceled, again, celery = {}, {}, {}
local walked = 0
for i = 1, #entries, 2 do
  local id, created = entries[i], tonumber(entries[i + 1])
  if created > now - older then break end  -- the rest is younger: start over next time
  walked = walked + 1
  local key = K.job(id)
  local f = redis.call('HMGET', key, 'state', 'backend', 'queue', 'dispatch', 'queued_at',
    'workflow_id', 'sent')
  local backend, queue, dispatch = f[2], f[3], f[4] or '1'
  if f[1] == 'queued' and tonumber(f[5] or '0') <= now - older and backend
     and not redis.call('ZSCORE', K.dispatching(backend), id) then
    local nid = dispatch == '1' and id or (id .. '-' .. dispatch)
    if backend == 'rq' then
      local status = redis.call('HGET', rq_job .. nid, 'status')
      local resend = false
      if not status and f[7] ~= dispatch then
        -- It never reached RQ: its send failed after the record was written (an
        -- idempotent or delayed enqueue while Redis went away).
        resend = true
      elseif not status then
        end_outside(id, key, 'removed outside taskrouter (its RQ job was deleted, e.g. from rq-dashboard)')
        table.insert(canceled, id)
      elseif status == 'canceled' or status == 'stopped' then
        end_outside(id, key, 'canceled outside taskrouter (its RQ job is ' .. status .. ')')
        table.insert(canceled, id)
      elseif not redis.call('LPOS', rq_queue .. queue, nid, 'MAXLEN', maxlen)
             and redis.call('LLEN', rq_queue .. queue) <= maxlen
             and not is_executing(nid) then
        resend = true
      end
      if resend then
        redis.call('HINCRBY', key, 'dispatch', 1)
        redis.call('HSET', key, 'queued_at', now)
        redis.call('ZADD', K.dispatching(backend), now, id)
        table.insert(again, id)
      end
    elseif backend == 'celery' and (not f[6] or f[6] == '') then
      table.insert(celery, id)
      table.insert(celery, dispatch)
      table.insert(celery, queue or '')
    end
  end
end
-- A whole batch of old entries: the next pass goes on after it. Else the walk reached the
-- young part or the end of the index, and the next pass starts again from the oldest.
local next_cursor = ''
if walked == limit then next_cursor = entries[2 * limit - 1] end
return {next_cursor, canceled, again, celery}
