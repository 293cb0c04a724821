-- Every write a strategy consumer makes to a scan goes through here, fenced:
-- nothing is appended once the scan has ended, once the strategy is terminal, or by an
-- attempt that has been superseded (a frozen worker that woke up after losing its job).
-- Deciding the scan's end happens in the same script, on the scan's own hash slot, so
-- exactly one terminal event is written however many workers finish at once.
--
-- Safe to re-send: a write whose reply was lost (the connection broke, Redis restarted)
-- is sent again with the same write token. The token of each strategy's last applied
-- write and its reply are kept in a hash of their own (delivery bookkeeping, not state the
-- log implies), so a re-sent write answers what the first one did and changes nothing: a
-- re-sent start never allocates a second attempt, a re-sent finish never counts twice.
-- (Writes of one strategy are sequential, so the last one is the only one in doubt.)
--
-- Event bodies come encoded from Python and are appended as they are; the script never
-- parses one. What it needs to know of an event comes beside it, as its note. The one
-- body built here is the terminal event's: its counts exist only in the fence.
--
-- KEYS[1] events stream, KEYS[2] fence hash, KEYS[3] write-token hash
-- ARGV[1] mode: start | append | finish
-- ARGV[2] strategy, ARGV[3] attempt (ignored for start), ARGV[4] retention seconds,
-- ARGV[5] terminal event id, ARGV[6] ts for a terminal event, ARGV[7] write token or "",
-- ARGV[8] schema version (the terminal event's `v`), ARGV[9] the most entries a scan's
--   stream may hold before strategy.progress events are dropped (0: no cap; findings and
--   lifecycle events are bounded on their own: findings per strategy, attempts)
-- ARGV[10..] triples of (type, data, note). The note: the opportunity id for
--   opportunity.found (counted once per scan), "final" for a strategy.failed that no
--   retry follows, else "". For start a single triple whose data lacks "attempt", which
--   is allocated here and spliced in.
-- Returns {status, attempt_or_entry_id, terminal_type_or_false}; for start the third item
-- is the data of scan.requested.
local events, fence, writes = KEYS[1], KEYS[2], KEYS[3]
local mode, strategy, token = ARGV[1], ARGV[2], ARGV[7]
local FIRST = 10
local max_entries = tonumber(ARGV[9])

local function requested_data()
  local first = redis.call('XRANGE', events, '-', '+', 'COUNT', 1)[1]
  if first then
    for j = 1, #first[2], 2 do
      if first[2][j] == 'data' then return first[2][j + 1] end
    end
  end
  return false
end

-- Remember an applied write's reply under its token; return the reply.
local function applied(second, third)
  if token ~= '' then
    local kept = third
    if mode == 'start' then kept = '' end  -- scan.requested is read again, not copied
    redis.call('HSET', writes, 'token:' .. strategy, token,
      'reply:' .. strategy, cjson.encode({tostring(second), kept or ''}))
  end
  return {'ok', second, third}
end

if redis.call('HEXISTS', fence, 'total') == 0 then
  return {'missing', 0, false}
end
if token ~= '' and redis.call('HGET', writes, 'token:' .. strategy) == token then
  local kept = cjson.decode(redis.call('HGET', writes, 'reply:' .. strategy))
  if mode == 'start' then return {'ok', tonumber(kept[1]), requested_data()} end
  local third = kept[2]
  if third == '' then third = false end
  return {'ok', kept[1], third}
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
  local data = '{"attempt":' .. attempt .. ',' .. string.sub(ARGV[FIRST + 1], 2)
  redis.call('XADD', events, '*', 'type', 'strategy.started', 'data', data)
  -- Hand back scan.requested so the worker learns the params without another round trip.
  return applied(attempt, requested_data())
end

local attempt = tonumber(ARGV[3])
local current = tonumber(redis.call('HGET', fence, 'attempt:' .. strategy) or '0')
if attempt ~= current then
  return {'stale', current, false}
end

local last = ''
local finished = nil
for i = FIRST, #ARGV, 3 do
  local type_, data, note = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if type_ == 'opportunity.found' then
    -- Count each opportunity id once per scan, exactly as the fold does.
    if redis.call('HSETNX', fence, 'opp:' .. note, 1) == 1 then
      redis.call('HINCRBY', fence, 'opportunities', 1)
    end
  elseif type_ == 'strategy.completed' then
    finished = 'completed'
  elseif type_ == 'strategy.failed' and mode == 'finish' and note == 'final' then
    finished = 'failed'
  end
  if type_ ~= 'strategy.progress' or max_entries == 0
      or redis.call('XLEN', events) < max_entries then
    last = redis.call('XADD', events, '*', 'type', type_, 'data', data)
  end
end

if finished == nil then
  return applied(last, false)
end

redis.call('HSET', fence, 'done:' .. strategy, finished)
redis.call('HINCRBY', fence, finished, 1)
local total = tonumber(redis.call('HGET', fence, 'total'))
local completed = tonumber(redis.call('HGET', fence, 'completed'))
local failed = tonumber(redis.call('HGET', fence, 'failed'))
if completed + failed < total then
  return applied(last, false)
end

local terminal = 'scan.failed'
if completed > 0 then terminal = 'scan.completed' end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local data = cjson.encode({
  event_id = ARGV[5], v = tonumber(ARGV[8]), ts = ARGV[6],
  opportunities = tonumber(redis.call('HGET', fence, 'opportunities')),
  strategies_completed = completed, strategies_failed = failed,
  duration_ms = now_ms - tonumber(redis.call('HGET', fence, 'created_ms')),
})
last = redis.call('XADD', events, '*', 'type', terminal, 'data', data)
redis.call('HSET', fence, 'terminal', terminal)
local ttl = tonumber(ARGV[4])
local reply = applied(last, terminal)
redis.call('EXPIRE', events, ttl)
redis.call('EXPIRE', fence, ttl)
redis.call('EXPIRE', writes, ttl)
return reply
