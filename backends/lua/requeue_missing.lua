-- Celery jobs queued at least older_ms ago whose message is in neither the broker's queue
-- nor its unacked hash (purged, or lost: backends/reconcile.py looked) get a new
-- dispatch, if they are still queued at the dispatch that was looked for. taskrouter
-- cannot tell a purge from a loss, and losing a job is worse than running it; an old
-- copy that turns up after all is refused at claim as stale.
-- ARGV: prefix, now_ms, older_ms, id1, dispatch1, id2, dispatch2, ...  Returns the ids.
local now, older = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV - 1, 2 do
  if redispatch_queued(ARGV[i], now, older, ARGV[i + 1]) then table.insert(out, ARGV[i]) end
end
return out
