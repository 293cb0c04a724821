-- Create a scan: append scan.requested and the fence hash, once.
-- KEYS[1] events stream, KEYS[2] fence hash
-- ARGV[1] data of scan.requested (encoded by Python), ARGV[2] number of strategies,
-- ARGV[3] created ms, ARGV[4..] the scan's strategy names
-- Returns the entry id, or "exists" when the scan was already created (idempotent retry).
-- The fence lists the scan's strategies (`in:<name>`, with the marker `names`), so a job
-- naming a strategy the scan does not have is refused by strategy_write.lua instead of
-- being counted toward the scan's end. A fence without the marker (written before the
-- marker existed) skips that check.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 'exists'
end
local id = redis.call('XADD', KEYS[1], '*', 'type', 'scan.requested', 'data', ARGV[1])
redis.call('HSET', KEYS[2], 'total', ARGV[2], 'created_ms', ARGV[3],
  'completed', 0, 'failed', 0, 'opportunities', 0)
redis.call('HSET', KEYS[2], 'names', 1)
for i = 4, #ARGV do
  redis.call('HSET', KEYS[2], 'in:' .. ARGV[i], 1)
end
return id
