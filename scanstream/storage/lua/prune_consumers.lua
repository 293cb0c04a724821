-- Remove consumers that are gone: no pending entry, and no read for ARGV[2] ms.
-- XGROUP DELCONSUMER drops the consumer's pending entries for good (redis#9745), so one
-- that still owns an entry is never removed. Atomic: the consumer cannot take an entry
-- between the check and the removal. A live worker that was removed anyway (a tiny
-- threshold) is recreated by its next XREADGROUP.
-- KEYS[1] job stream; ARGV[1] group, ARGV[2] min idle ms. Returns the removed names.
local stream, group = KEYS[1], ARGV[1]
local min_idle = tonumber(ARGV[2])
if redis.call('EXISTS', stream) == 0 then
  return {}
end
local removed = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local name, pending, idle
  for j = 1, #c, 2 do
    if c[j] == 'name' then name = c[j + 1]
    elseif c[j] == 'pending' then pending = c[j + 1]
    elseif c[j] == 'idle' then idle = c[j + 1] end
  end
  if pending == 0 and idle >= min_idle then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, name)
    table.insert(removed, name)
  end
end
return removed
