-- Fair share between users on one job partition: per-user lanes served round-robin.
--
-- A job does not go straight to the partition's job stream (first in, first out, where
-- one user's backlog stands in front of everyone). It waits in its user's lane, a sorted
-- set ordered by (priority, arrival), and the users with waiting jobs take turns in a ring.
-- Jobs move from lanes to the stream only as workers can take them: the stream keeps at
-- most `depth` undelivered jobs (enough to wake idle workers at once), so a newcomer
-- waits behind at most `depth` jobs of others plus one turn of the ring. A user with
-- `cap` jobs in the stream (delivered or not, not yet acknowledged) is skipped: the
-- others go first.
--
-- Every key is in the partition's hash slot: the lanes are named from ARGV[2] and the
-- user (one slot, so the script may reach them on a cluster).
-- KEYS[1] job stream, KEYS[2] ring (list of users with waiting jobs),
-- KEYS[3] running hash (user -> jobs in the stream not yet acknowledged),
-- KEYS[4] arrival counter (orders waiting jobs: Redis's order, not a client's clock)
-- ARGV[1] mode, ARGV[2] lane key prefix, ARGV[3] depth, ARGV[4] cap (0: none),
-- ARGV[5] consumer group
--   enqueue: ARGV[6] user, ARGV[7] scan id, ARGV[8] priority band (0 first),
--            ARGV[9..] strategies
--   ack:     ARGV[6..] pairs (entry id, user or "")
--   dispatch, recount: nothing more
-- Returns how many jobs moved to the stream (recount: the users counted).
local stream, ring, running = KEYS[1], KEYS[2], KEYS[3]
local mode, lane_prefix = ARGV[1], ARGV[2]
local depth, cap, group = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]

local function last_delivered()
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
  if not ok then return '0-0' end
  for _, g in ipairs(groups) do
    -- XINFO GROUPS answers a flat list of field, value per group
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    if info['name'] == group then return info['last-delivered-id'] end
  end
  return '0-0'
end

-- Entries of the stream not yet delivered to the group, counted up to `depth`. (Not the
-- group's lag: Redis 7.0 overstates it for good once an undelivered entry was deleted,
-- and an overstated count would stop the lanes from moving.)
local function undelivered()
  return #redis.call('XRANGE', stream, '(' .. last_delivered(), '+', 'COUNT', depth)
end

local function dispatch()
  local room = depth - undelivered()
  if room <= 0 then return 0 end
  local users = redis.call('LLEN', ring)
  -- Each user's running count, read once per call (only with a cap), and the jobs moved
  -- per user, added to the running hash once at the end.
  local counts, added = {}, {}
  local moved, skipped = 0, 0
  while room > 0 and users > 0 and skipped < users do
    local user = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
    local n = 0
    if cap > 0 then
      n = counts[user]
      if n == nil then
        n = tonumber(redis.call('HGET', running, user) or '0')
        counts[user] = n
      end
    end
    if cap > 0 and n >= cap then
      skipped = skipped + 1
    else
      local lane = lane_prefix .. user
      local head = redis.call('ZPOPMIN', lane)
      if #head > 0 then
        local sep = string.find(head[1], '\n', 1, true)
        redis.call('XADD', stream, '*', 'scan_id', string.sub(head[1], 1, sep - 1),
          'strategy', string.sub(head[1], sep + 1), 'user', user)
        counts[user] = n + 1
        added[user] = (added[user] or 0) + 1
        moved, room, skipped = moved + 1, room - 1, 0
      end
      if redis.call('EXISTS', lane) == 0 then
        redis.call('LREM', ring, 0, user)
        users = users - 1
      end
    end
  end
  for user, n in pairs(added) do redis.call('HINCRBY', running, user, n) end
  return moved
end

if mode == 'enqueue' then
  local user, scan_id = ARGV[6], ARGV[7]
  -- Each job its own arrival number, in the order given (a scan's longest jobs first):
  -- band x 2^42 + arrival, exact in a double; '%.0f' because Lua's own number-to-string
  -- keeps 14 digits only
  local last = redis.call('INCRBY', KEYS[4], #ARGV - 8)
  local base = tonumber(ARGV[8]) * 4398046511104 + last - (#ARGV - 8)
  local lane = lane_prefix .. user
  if redis.call('EXISTS', lane) == 0 then redis.call('RPUSH', ring, user) end
  for i = 9, #ARGV do
    redis.call('ZADD', lane, string.format('%.0f', base + i - 8), scan_id .. '\n' .. ARGV[i])
  end
  return dispatch()
elseif mode == 'ack' then
  -- One XACK per user: it answers how many of that user's entries were still pending,
  -- which is how much the user's running count drops (an entry acknowledged twice, or
  -- never delivered, counts nothing).
  local ids = {}
  for i = 6, #ARGV, 2 do
    local user = ARGV[i + 1]
    if ids[user] == nil then ids[user] = {} end
    table.insert(ids[user], ARGV[i])
  end
  for user, entries in pairs(ids) do
    local acked = 0
    for i = 1, #entries, 1000 do  -- unpack's limit: a long backlog in several calls
      local last = math.min(i + 999, #entries)
      acked = acked + redis.call('XACK', stream, group, unpack(entries, i, last))
    end
    if acked > 0 and user ~= '' then
      if redis.call('HINCRBY', running, user, -acked) <= 0 then
        redis.call('HDEL', running, user)
      end
    end
  end
  return dispatch()
elseif mode == 'dispatch' then
  return dispatch()
elseif mode == 'recount' then
  -- The running counts from the stream itself: pending entries and undelivered ones.
  -- Run by the reaper, so a count that drifted (a lost acknowledgement) heals.
  local counts = {}
  local function count(fields)
    for i = 1, #fields, 2 do
      if fields[i] == 'user' then counts[fields[i + 1]] = (counts[fields[i + 1]] or 0) + 1 end
    end
  end
  local ok, pending = pcall(redis.call, 'XPENDING', stream, group, '-', '+', 100000)
  if ok then
    for _, p in ipairs(pending) do
      local body = redis.call('XRANGE', stream, p[1], p[1])
      if #body > 0 then count(body[1][2]) end
    end
  end
  for _, e in ipairs(redis.call('XRANGE', stream, '(' .. last_delivered(), '+')) do
    count(e[2])
  end
  redis.call('DEL', running)
  local users = 0
  for user, n in pairs(counts) do
    redis.call('HSET', running, user, n)
    users = users + 1
  end
  return users
end
return redis.error_reply('unknown mode ' .. tostring(mode))
