-- Take over jobs idle past a threshold (their worker died or froze), atomically.
-- Pending entries whose body was deleted (XDEL, or trimmed by someone else) have nothing
-- to run: they are acknowledged here, so they never sit in the pending list for ever.
-- Redis 6.2's XAUTOCLAIM replies nil for such an entry, without even its id
-- (redis#6199); 7.0 lists their ids in a third element (redis#10756). JUSTID gives every
-- id on both, and XRANGE tells whether the body is still there.
-- KEYS[1] job stream; ARGV[1] group, ARGV[2] consumer, ARGV[3] min idle ms,
-- ARGV[4] start id, ARGV[5] count
-- Returns {next start id, {{id, fields, deliveries}...}, {deleted ids}}
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local reply = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[3], ARGV[4],
  'COUNT', ARGV[5], 'JUSTID')
local jobs, deleted = {}, {}
for _, id in ipairs(reply[2]) do
  local body = redis.call('XRANGE', stream, id, id)
  if #body == 0 then
    redis.call('XACK', stream, group, id)
    table.insert(deleted, id)
  else
    -- JUSTID does not count the delivery; this XCLAIM (we own the entry now) does.
    redis.call('XCLAIM', stream, group, consumer, 0, id)
    local p = redis.call('XPENDING', stream, group, id, id, 1)
    table.insert(jobs, {id, body[1][2], p[1][4]})
  end
end
if reply[3] then
  for _, id in ipairs(reply[3]) do table.insert(deleted, id) end
end
return {reply[1], jobs, deleted}
