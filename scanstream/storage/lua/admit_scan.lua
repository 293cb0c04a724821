-- Admit a new scan of one user, or say why not: a token bucket of scans per minute, and
-- a cap on the user's active (queued or running) scans. Both keys are in the user's slot.
-- KEYS[1] the user's active scans (sorted set: scan id -> created ms),
-- KEYS[2] the user's bucket (hash: tokens, at_ms)
-- ARGV[1] now ms, ARGV[2] scans per minute (0: no rate limit), ARGV[3] max active
-- (0: no cap), ARGV[4] scan id, ARGV[5] the keys' time to live, seconds
-- Returns {"ok"}, {"rate", ms until a token}, or {"active", scan ids...} (the caller
-- drops the ones that have ended and asks again).
local active, bucket = KEYS[1], KEYS[2]
local now, rate, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens
if rate > 0 then
  local state = redis.call('HMGET', bucket, 'tokens', 'at_ms')
  tokens = tonumber(state[1] or rate)
  local at = tonumber(state[2] or now)
  tokens = math.min(rate, tokens + (now - at) * rate / 60000)
  if tokens < 1 then
    return {'rate', math.ceil((1 - tokens) * 60000 / rate)}
  end
end
if cap > 0 and redis.call('ZCARD', active) >= cap then
  local out = {'active'}
  for _, id in ipairs(redis.call('ZRANGE', active, 0, -1)) do table.insert(out, id) end
  return out
end
if rate > 0 then
  redis.call('HSET', bucket, 'tokens', tostring(tokens - 1), 'at_ms', now)
  redis.call('EXPIRE', bucket, 120)
end
redis.call('ZADD', active, now, ARGV[4])
redis.call('EXPIRE', active, ARGV[5])
return {'ok'}
