-- Celery jobs queued for longer than the broker's visibility window get a new dispatch.
-- kombu can lose a message outright (it pops it, then records it as unacked in a second
-- round trip: a worker killed in between loses it), and restores messages reserved by a
-- dead worker only after the window. Past the window the old message, if it still
-- exists, is refused at claim as stale: nothing runs twice, nothing stays queued forever.
-- ARGV: prefix, now_ms, older_than_ms, limit.  Returns the ids given a new dispatch.
local now, older, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
local ids = redis.call('ZRANGE', K.index_of('state', 'queued'), '-inf', now - older, 'BYSCORE', 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  if redispatch_queued(id, now, older) then table.insert(out, id) end
end
return out
