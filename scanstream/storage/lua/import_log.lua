-- Import an exported log as a scan (`scanstream replay import`): its entries with their
-- exported ids, its fence, and their expiry. Nothing is written when the scan exists
-- already (its stream or its fence), and no other write to it slips in between that
-- check and the writes. The owner's listing is in another hash slot: written after.
-- KEYS[1] events stream, KEYS[2] fence hash
-- ARGV[1] seconds to live, or "" (the scan has not ended: no expiry)
-- ARGV[2] n, the number of fence fields, ARGV[3 .. 2 + 2n] the fence as field, value
-- then the entries, each as: entry id, number of fields m, m pairs of field, value
-- Returns the number of entries written, or "exists" (nothing was written).
local events, fence = KEYS[1], KEYS[2]
if redis.call('EXISTS', events, fence) > 0 then
  return 'exists'
end
local fence_fields = tonumber(ARGV[2])
local i = 3 + 2 * fence_fields
local written = 0
while i <= #ARGV do
  local id, fields = ARGV[i], tonumber(ARGV[i + 1])
  local entry = {}
  for j = 1, 2 * fields do
    entry[j] = ARGV[i + 1 + j]
  end
  redis.call('XADD', events, id, unpack(entry))
  written = written + 1
  i = i + 2 + 2 * fields
end
for j = 3, 2 + 2 * fence_fields, 2 do
  redis.call('HSET', fence, ARGV[j], ARGV[j + 1])
end
if ARGV[1] ~= '' then
  redis.call('EXPIRE', events, ARGV[1])
  if fence_fields > 0 then
    redis.call('EXPIRE', fence, ARGV[1])
  end
end
return written
