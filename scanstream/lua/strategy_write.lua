-- Every write a strategy consumer makes to a scan goes through here, fenced:
-- nothing is appended once the scan has ended, once the strategy is terminal, or by an
-- attempt that has been superseded (a frozen worker that woke up after losing its job).
-- Deciding the scan's end happens in the same script, on the scan's own hash slot, so
-- exactly one terminal event is written however many workers finish at once.
--
-- KEYS[1] events stream, KEYS[2] fence hash
-- ARGV[1] mode: start | append | finish
-- ARGV[2] strategy, ARGV[3] attempt (ignored for start), ARGV[4] retention seconds,
-- ARGV[5] terminal event id, ARGV[6] ts for a terminal event
-- ARGV[7..] pairs of (type, data); for start a single data without "attempt", which is
--   allocated here and spliced in.
-- Returns {status, attempt_or_entry_id, terminal_type_or_false}; for start the third item
-- is the data of scan.requested.
local events, fence = KEYS[1], KEYS[2]
local mode, strategy = ARGV[1], ARGV[2]

if redis.call('HEXISTS', fence, 'total') == 0 then
  return {'missing', 0, false}
end
if redis.call('HEXISTS', fence, 'terminal') == 1 then
  return {'ended', 0, false}
end
if redis.call('HEXISTS', fence, 'done:' .. strategy) == 1 then
  return {'done', 0, false}
end

if redis.call('HEXISTS', fence, 'names') == 1
    and redis.call('HEXISTS', fence, 'in:' .. strategy) == 0 then
  -- Not a strategy of this scan (a hand-written job): it never counts toward the end.
  return {'missing', 0, false}
end

if mode == 'start' then
  local attempt = redis.call('HINCRBY', fence, 'attempt:' .. strategy, 1)
  local data = '{"attempt":' .. attempt .. ',' .. string.sub(ARGV[8], 2)
  redis.call('XADD', events, '*', 'type', 'strategy.started', 'data', data)
  -- Hand back scan.requested so the worker learns the params without another round trip.
  local first = redis.call('XRANGE', events, '-', '+', 'COUNT', 1)[1]
  local requested = false
  if first then
    for j = 1, #first[2], 2 do
      if first[2][j] == 'data' then requested = first[2][j + 1] end
    end
  end
  return {'ok', attempt, requested}
end

local attempt = tonumber(ARGV[3])
local current = tonumber(redis.call('HGET', fence, 'attempt:' .. strategy) or '0')
if attempt ~= current then
  return {'stale', current, false}
end

local last = ''
local finished = nil
for i = 7, #ARGV, 2 do
  local type_, data = ARGV[i], ARGV[i + 1]
  if type_ == 'opportunity.found' then
    -- Count each opportunity id once per scan, exactly as the fold does.
    local oid = cjson.decode(data)['opportunity']['id']
    if redis.call('HSETNX', fence, 'opp:' .. oid, 1) == 1 then
      redis.call('HINCRBY', fence, 'opportunities', 1)
    end
  elseif type_ == 'strategy.completed' then
    finished = 'completed'
  elseif type_ == 'strategy.failed' and mode == 'finish' and cjson.decode(data)['final'] then
    finished = 'failed'
  end
  last = redis.call('XADD', events, '*', 'type', type_, 'data', data)
end

if finished == nil then
  return {'ok', last, false}
end

redis.call('HSET', fence, 'done:' .. strategy, finished)
redis.call('HINCRBY', fence, finished, 1)
local total = tonumber(redis.call('HGET', fence, 'total'))
local completed = tonumber(redis.call('HGET', fence, 'completed'))
local failed = tonumber(redis.call('HGET', fence, 'failed'))
if completed + failed < total then
  return {'ok', last, false}
end

local terminal = 'scan.failed'
if completed > 0 then terminal = 'scan.completed' end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local data = cjson.encode({
  event_id = ARGV[5], v = 1, ts = ARGV[6],
  opportunities = tonumber(redis.call('HGET', fence, 'opportunities')),
  strategies_completed = completed, strategies_failed = failed,
  duration_ms = now_ms - tonumber(redis.call('HGET', fence, 'created_ms')),
})
last = redis.call('XADD', events, '*', 'type', terminal, 'data', data)
redis.call('HSET', fence, 'terminal', terminal)
local ttl = tonumber(ARGV[4])
redis.call('EXPIRE', events, ttl)
redis.call('EXPIRE', fence, ttl)
return {'ok', last, terminal}
