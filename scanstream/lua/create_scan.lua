-- Create a scan: append scan.requested and the fence hash, once.
-- KEYS[1] events stream, KEYS[2] fence hash
-- ARGV[1] data of scan.requested, ARGV[2] number of strategies, ARGV[3] created ms
-- Returns the entry id, or "exists" when the scan was already created (idempotent retry).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 'exists'
end
local id = redis.call('XADD', KEYS[1], '*', 'type', 'scan.requested', 'data', ARGV[1])
redis.call('HSET', KEYS[2], 'total', ARGV[2], 'created_ms', ARGV[3],
  'completed', 0, 'failed', 0, 'opportunities', 0)
return id
