-- Workflow helpers, prepended (after common.lua) to every wf_*.lua script.

local function finished(state)
  return state == 'succeeded' or state == 'failed' or state == 'canceled'
end

-- A template such as '[@id1,@id2]' with each @id replaced by that member's result JSON,
-- or null unless it succeeded: a step's first argument, or a workflow's final result.
-- Results are the codec's JSON already, so they are spliced in, never re-encoded (cjson
-- would round numbers and reorder nothing we could rely on).
local function compose(tpl)
  return (string.gsub(tpl, '@(%w+)', function(id)
    local r = redis.call('HMGET', K.job(id), 'state', 'result')
    if r[1] == 'succeeded' and r[2] then return r[2] end
    return 'null'
  end))
end

-- The members that wait for this one (a JSON list of ids).
local function next_of(key)
  local n = redis.call('HGET', key, 'wf_next')
  if not n or n == '' then return {} end
  return cjson.decode(n)
end
