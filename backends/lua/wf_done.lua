-- A member of a workflow has finished (succeeded, failed or canceled). Whoever calls
-- (the worker that ran it, a reader or the janitor catching up), each member is counted
-- once, so concurrent finishes neither lose a completion nor start a dependent twice:
-- the one call that takes a dependent's wait count to zero starts it.
-- ARGV: prefix, member_id, now_ms, dispatch_grace_ms, canvas_fallback_ms
-- Returns the dependents to send now (per-step mode), flat as take_due's:
-- id, backend, queue, dispatch, profile, ...
local id, now = ARGV[2], tonumber(ARGV[3])
local grace, fallback = tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {}

local function count_member(wk, key, state)
  redis.call('HSET', key, 'wf_counted', '1')
  redis.call('HINCRBY', wk, 'done', 1)
  if state ~= 'succeeded' then redis.call('HINCRBY', wk, 'n_' .. state, 1) end
  if redis.call('HGET', wk, 'state') == 'queued' then
    redis.call('HSET', wk, 'state', 'running')
  end
end

-- "step 2 (t.parse, job 0190...)": how errors name a member.
local function describe(mid, key)
  local f = redis.call('HMGET', key, 'wf_label', 'task')
  return (f[1] or 'member') .. ' (' .. (f[2] or '?') .. ', job ' .. mid .. ')'
end

-- Dependency of member d done: when it was the last, d gets its input and may start.
local function unblock(d, mode)
  local dk = K.job(d)
  local state = redis.call('HGET', dk, 'state')
  if not state then return end
  if redis.call('HINCRBY', dk, 'wf_wait', -1) > 0 or state ~= 'scheduled' then return end
  local f = redis.call('HMGET', dk, 'wf_input', 'wf_args', 'wf_kwargs')
  local args = compose(f[1] or '')
  if f[2] and f[2] ~= '' then args = args .. ',' .. f[2] end
  redis.call('HSET', dk, 'payload', '{"a":[' .. args .. '],"k":' .. (f[3] or '{}') .. '}')
  if mode == 'per-step' then
    redis.call('HSET', dk, 'queued_at', now)
    move_state(d, dk, state, 'queued')
    -- The caller sends it; if the caller dies first, its engine's pump does after the grace.
    local s = redis.call('HMGET', dk, 'backend', 'queue', 'dispatch', 'profile')
    redis.call('ZADD', K.dispatching(s[1]), now + grace, d)
    table.insert(out, d); table.insert(out, s[1]); table.insert(out, s[2])
    table.insert(out, s[3]); table.insert(out, s[4])
  else
    -- Celery's canvas sends it on. Should that message never come (the worker holding the
    -- canvas died), the router's schedule sends the step itself after the fallback delay;
    -- wf_arrive.lua takes it off the schedule when Celery's message arrives.
    redis.call('HSET', dk, 'due_at', now + fallback)
    redis.call('ZADD', K.schedule, now + fallback, d)
  end
end

-- Member root ended without a result: every member waiting for it, directly or through
-- others, ends now and names it. One that gathers a list of results (a chord body)
-- fails; one that waits for a single result (the rest of a chain) is canceled.
local function stop_downstream(wk, root, rkey, rstate, cancel_requested)
  local who = describe(root, rkey)
  local etype, emsg, why = 'Canceled', 'canceled', who .. ' was canceled'
  if rstate == 'failed' then
    local e = cjson.decode(redis.call('HGET', rkey, 'error') or '{}')
    etype, emsg = tostring(e.type or 'Error'), tostring(e.message or '')
    why = who .. ' failed: ' .. etype .. ': ' .. emsg
  end
  -- The first member to fail (or be canceled on its own) is the workflow's error; a
  -- cancel of the whole workflow is no member's error.
  if rstate == 'failed' or not cancel_requested then
    redis.call('HSETNX', wk, 'error', cjson.encode({type = etype, message = emsg, job_id = root,
      task = redis.call('HGET', rkey, 'task') or '', member = who}))
  end
  local queue, head = next_of(rkey), 1
  while head <= #queue do
    local d = queue[head]
    head = head + 1
    local dk = K.job(d)
    -- A member that waits for root cannot have started; 'scheduled' also skips one
    -- already ended through another path of the same walk.
    if redis.call('HGET', dk, 'state') == 'scheduled' then
      local new, err = 'canceled', {type = 'Canceled', message = 'canceled: ' .. why}
      if rstate == 'failed' and redis.call('HGET', dk, 'wf_gathers') == '1' then
        new, err = 'failed', {type = 'UpstreamFailed', message = why}
      end
      redis.call('ZREM', K.schedule, d)
      redis.call('HDEL', dk, 'due_at')
      end_job(d, dk, 'scheduled', new, now, 'error', cjson.encode(err))
      count_member(wk, dk, new)
      for _, n in ipairs(next_of(dk)) do table.insert(queue, n) end
    end
  end
end

local function finish_if_done(wk, wid)
  local w = redis.call('HMGET', wk, 'state', 'done', 'total', 'cancel_requested', 'n_failed',
    'n_canceled', 'result_tpl', 'keep_ms')
  if finished(w[1]) or tonumber(w[2] or '0') < tonumber(w[3] or '0') then return end
  local final = 'succeeded'
  if w[4] then
    final = 'canceled'
  elseif tonumber(w[5] or '0') > 0 then
    final = 'failed'
  elseif tonumber(w[6] or '0') > 0 then
    final = 'canceled'
  end
  redis.call('HSET', wk, 'state', final, 'finished_at', now, 'result', compose(w[7] or 'null'))
  redis.call('PEXPIRE', wk, tonumber(w[8] or '86400000'))
  redis.call('ZREM', K.active_workflows, wid)
end

local key = K.job(id)
local m = redis.call('HMGET', key, 'state', 'workflow_id', 'wf_counted')
if not finished(m[1]) or not m[2] or m[3] then return out end
local wk = K.workflow(m[2])
local w = redis.call('HMGET', wk, 'mode', 'cancel_requested')
if not w[1] then return out end
count_member(wk, key, m[1])
if m[1] == 'succeeded' then
  if not w[2] then  -- a workflow being canceled starts nothing more
    for _, d in ipairs(next_of(key)) do unblock(d, w[1]) end
  end
else
  stop_downstream(wk, id, key, m[1], w[2])
end
finish_if_done(wk, m[2])
return out
