-- The attempt holding token ARGV[3] reports progress or stores a checkpoint.
-- ARGV: prefix, id, token, now_ms, kind ('progress'|'checkpoint'|'charge'), name, value,
--       max_chars
--   progress: name = the message, value = the fraction; the record's 'progress' field
--   becomes {"fraction", "message", "at"}.
--   checkpoint: value = codec JSON; the record's 'checkpoints' field (a JSON object of
--   name: codec JSON text, so that no number goes through cjson) gets name = value,
--   unless all of them would pass max_chars.
--   charge: value = an amount, added to the record's 'spend' and, when the profile has
--   a budget, to its spend in the current window (and its key's).
-- Returns {'ok'}, {'lost', state} when the attempt no longer owns the job, or
-- {'full', chars}.
local id, now, kind = ARGV[2], tonumber(ARGV[4]), ARGV[5]
local key = K.job(id)
local r = redis.call('HMGET', key, 'state', 'token', 'checkpoints')
if r[1] ~= 'running' or r[2] ~= ARGV[3] then return {'lost', r[1] or 'missing'} end
if kind == 'progress' then
  redis.call('HSET', key, 'progress', cjson.encode({fraction = tonumber(ARGV[7]),
    message = ARGV[6], at = now}))
  return {'ok'}
end
if kind == 'charge' then
  local f = redis.call('HMGET', key, 'profile', 'limit_key')
  local l = redis.call('HMGET', K.limits(f[1]), 'budget_per_ms', 'key_budget')
  charge(key, f[1], f[2], tonumber(ARGV[7]), now, tonumber(l[1] or ''), l[2])
  return {'ok'}
end
local all = (r[3] and r[3] ~= '') and cjson.decode(r[3]) or {}
all[ARGV[6]] = ARGV[7]
local text = cjson.encode(all)
if #text > tonumber(ARGV[8]) then return {'full', tostring(#text)} end
redis.call('HSET', key, 'checkpoints', text)
return {'ok'}
