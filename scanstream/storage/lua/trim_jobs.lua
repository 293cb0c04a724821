-- Trim the job stream without ever dropping an entry a consumer group still needs.
-- An entry may go once every group has delivered and acknowledged it: its id is below
-- each group's oldest pending id and at or below each group's last-delivered id
-- (anything above that has not been delivered yet). XTRIM MINID drops ids below the
-- threshold only, so the threshold is the smallest of those bounds. Atomic: no delivery
-- or acknowledgement can slip in between reading the bounds and trimming.
-- KEYS[1] job stream. Returns {entries trimmed, threshold id or ""}.
local stream = KEYS[1]
if redis.call('EXISTS', stream) == 0 then
  return {0, ''}
end
local groups = redis.call('XINFO', 'GROUPS', stream)
if #groups == 0 then
  return {0, ''}  -- no group: nothing is known to be consumed
end

local function parse(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local best_ms, best_seq = nil, nil
local function consider(ms, seq)
  if best_ms == nil or ms < best_ms or (ms == best_ms and seq < best_seq) then
    best_ms, best_seq = ms, seq
  end
end

for _, g in ipairs(groups) do
  local name, last
  for j = 1, #g, 2 do
    if g[j] == 'name' then name = g[j + 1] elseif g[j] == 'last-delivered-id' then last = g[j + 1] end
  end
  local ms, seq = parse(last)
  consider(ms, seq + 1)  -- the first id after the last delivered one
  local summary = redis.call('XPENDING', stream, name)
  if summary[1] > 0 then
    consider(parse(summary[2]))  -- the oldest pending id
  end
end

local threshold = string.format('%.0f-%.0f', best_ms, best_seq)
local trimmed = redis.call('XTRIM', stream, 'MINID', threshold)
return {trimmed, threshold}
