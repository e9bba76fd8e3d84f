-- Celery jobs whose message a dead worker held (reserved in kombu's unacked hash, never
-- claimed) get a new dispatch now: kombu would restore the message only after its
-- visibility window. A message that a live worker holds gets one too, which is safe:
-- that worker's copy is then refused at claim as stale, and the new one runs.
-- ARGV: prefix, now_ms, id1, dispatch1, id2, dispatch2, ...  Returns the ids redispatched.
local now = tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV - 1, 2 do
  if redispatch_queued(ARGV[i], now, 0, ARGV[i + 1]) then table.insert(out, ARGV[i]) end
end
return out
