-- End a scan from outside its strategies (cancellation, deadline), once.
-- The terminal event's body is built here from the fence's counts (they exist nowhere
-- else); every other body comes encoded from Python and is appended as it is.
-- KEYS[1] events stream, KEYS[2] fence hash, KEYS[3] write-token hash (expires with them)
-- ARGV[1] terminal type, or "auto": scan.completed if any strategy completed, else
--   scan.failed (the scan deadline: the scan ends with what it has)
-- ARGV[2] terminal event id, ARGV[3] ts, ARGV[4] retention seconds,
-- ARGV[5] reason or "", ARGV[6] schema version (the terminal event's `v`),
-- ARGV[7..] pairs of (type, data) appended before the terminal event
-- Returns {"ok", entry id, terminal type} or {"ended", terminal type} or {"missing", ""}
local events, fence = KEYS[1], KEYS[2]
if redis.call('HEXISTS', fence, 'total') == 0 then
  return {'missing', ''}
end
local already = redis.call('HGET', fence, 'terminal')
if already then
  return {'ended', already}
end
for i = 7, #ARGV, 2 do
  redis.call('XADD', events, '*', 'type', ARGV[i], 'data', ARGV[i + 1])
end
local completed = tonumber(redis.call('HGET', fence, 'completed'))
local terminal = ARGV[1]
if terminal == 'auto' then
  terminal = 'scan.failed'
  if completed > 0 then terminal = 'scan.completed' end
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local body = {
  event_id = ARGV[2], v = tonumber(ARGV[6]), ts = ARGV[3],
  opportunities = tonumber(redis.call('HGET', fence, 'opportunities')),
  strategies_completed = completed,
  strategies_failed = tonumber(redis.call('HGET', fence, 'failed')),
  duration_ms = now_ms - tonumber(redis.call('HGET', fence, 'created_ms')),
}
if ARGV[5] ~= '' then body['reason'] = ARGV[5] end
local id = redis.call('XADD', events, '*', 'type', terminal, 'data', cjson.encode(body))
redis.call('HSET', fence, 'terminal', terminal)
local ttl = tonumber(ARGV[4])
redis.call('EXPIRE', events, ttl)
redis.call('EXPIRE', fence, ttl)
redis.call('EXPIRE', KEYS[3], ttl)
return {'ok', id, terminal}
