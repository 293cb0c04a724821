-- Heartbeat: keep this consumer's claim on its running jobs alive.
-- A bare XCLAIM could take a job back from a worker that reclaimed it meanwhile, so each
-- id is re-claimed only if this consumer still owns it.
-- KEYS[1] job stream; ARGV[1] group, ARGV[2] consumer, ARGV[3..] entry ids
-- Returns the ids this consumer no longer owns (lost to another worker, or acknowledged).
local lost = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
  else
    table.insert(lost, id)
  end
end
return lost
