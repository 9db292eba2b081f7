/**
 * The Lua scripts of the Redis transport. Each runs atomically on the server, and every key a
 * script touches belongs to one topic (one hash slot), so they stay atomic on a cluster.
 *
 * Stream entry fields: `i` message id, `b` body, `h` headers (JSON), `x` expiry (epoch ms; absent
 * when none). Entries that are not first publishes (retries, releases, replays) also carry `p`
 * priority, `t` original publish time and `a` the attempts already made, so that
 * attempt = a + the entry's delivery count; an entry made by a nack with an error carries it as
 * `l` (the last error of the entry's first delivery only: a later delivery of the same entry
 * follows a lease that ran out). A lease is (consumer, delivery count): a settle whose
 * pending entry now belongs to another consumer, or was delivered again since, does nothing.
 */

/** Shared Lua helpers, prepended to the scripts that need them. */
const HELPERS = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Orders two stream ids.
local function compare(a, b)
  local da, db = string.find(a, '-', 1, true), string.find(b, '-', 1, true)
  local ma, mb = tonumber(string.sub(a, 1, da - 1)), tonumber(string.sub(b, 1, db - 1))
  if ma ~= mb then return ma < mb and -1 or 1 end
  local sa, sb = tonumber(string.sub(a, da + 1)), tonumber(string.sub(b, db + 1))
  if sa == sb then return 0 end
  return sa < sb and -1 or 1
end
local function owned(key, group, consumer, id, count)
  local p = redis.pcall('XPENDING', key, group, id, id, 1)
  if type(p) ~= 'table' or p.err or p[1] == nil then return false end
  return p[1][2] == consumer and p[1][4] == count
end
-- id -> { owner, delivery count } of the pending entries that \`leases\` (\`consumer id count …\`)
-- may name: per consumer, one XPENDING of that consumer's entries between its lowest and highest
-- id, so a batch of settles costs one scan of its own leases, not of the whole group's.
local function pending_of(key, group, leases)
  local span = {}
  for consumer, id in string.gmatch(leases, '(%S+) (%S+) %S+') do
    local s = span[consumer]
    if s == nil then
      span[consumer] = { id, id }
    else
      if compare(id, s[1]) < 0 then s[1] = id end
      if compare(id, s[2]) > 0 then s[2] = id end
    end
  end
  local held = {}
  for consumer, s in pairs(span) do
    local p = redis.pcall('XPENDING', key, group, s[1], s[2], 1000000, consumer)
    if type(p) == 'table' and not p.err then
      for _, e in ipairs(p) do held[e[1]] = e end
    end
  end
  return held
end
local function ensure_retry(rkey, group)
  redis.pcall('XGROUP', 'CREATE', rkey, group, '0', 'MKSTREAM')
end
-- The fields of an entry without p/t/a/l, then p/t/a as given, and l when a non-empty one is given.
local function requeue_fields(src, p, t, a, l)
  local f = {}
  for j = 1, #src, 2 do
    local k = src[j]
    if k ~= 'p' and k ~= 't' and k ~= 'a' and k ~= 'l' then
      f[#f + 1] = k
      f[#f + 1] = src[j + 1]
    end
  end
  f[#f + 1] = 'p'; f[#f + 1] = p
  f[#f + 1] = 't'; f[#f + 1] = t
  f[#f + 1] = 'a'; f[#f + 1] = a
  if l and l ~= '' then f[#f + 1] = 'l'; f[#f + 1] = l end
  return f
end
`;

/**
 * Claims up to `room` deliveries for one consumer of a group, across the topics given.
 * KEYS: per topic 12 keys: its 10 priority streams (9 first), the group's retry stream and delayed set.
 * ARGV: group, consumer, room, minIdleMs (0: no reclaim), moveLimit, topic offset (which topic
 * goes first), direct (1: leave the fast stream to the client, see below), then per topic the id
 * the group starts at on its priority streams, then per topic the XAUTOCLAIM cursor of each of its
 * 11 streams.
 * Order: due delayed entries move into the retry streams; entries idle past minIdleMs are
 * reclaimed (crashed consumers); then retry streams; then new entries, priority 9 to 0.
 * Returns { server now ms, next due time of a delayed entry or -1, the claimed entries packed into
 * one string (see frame), tails, fast }; tails (when nothing was claimed) are the newest entry id of
 * each key; fast is the key index of the one stream a single-topic subscription may read directly
 * for a while (0: none); with direct = 1 the script then reads nothing from that stream and the
 * client reads it with a plain XREADGROUP (building a reply frame per entry in Lua costs the
 * server far more than the read itself); cursors are the reclaim cursors to pass next time.
 */
export const CLAIM = `${HELPERS}
local group, consumer = ARGV[1], ARGV[2]
local room = tonumber(ARGV[3])
local min_idle = tonumber(ARGV[4])
local move_limit = tonumber(ARGV[5])
local offset = tonumber(ARGV[6])
local direct = ARGV[7] == '1'
local ntopics = #KEYS / 12
-- ARGV[8 ..]: the start id of each topic, then the reclaim cursor of each topic's 11 streams.
local function since_of(i) return ARGV[8 + i] end
local cursors = {}
for i = 0, ntopics * 11 - 1 do cursors[i + 1] = ARGV[8 + ntopics + i] or '0-0' end
-- Topics in turn from \`offset\`, so a busy topic cannot starve the others of a pattern.
local function topic_at(k) return (k + offset) % ntopics end
local now = now_ms()
local out = {}
local next_due = -1

-- One entry as bytes: key index u32, delivery count u32, id (u16 length), then its fields as
-- (u16 length, name, u32 length, value) pairs after a u16 pair count. Sending the whole claim
-- as one string spares the client decoding a dozen protocol elements per message.
local formats = {}
local function frame(idx, id, count, fields)
  local n = #fields / 2
  local fmt = formats[n]
  if not fmt then
    fmt = '>I4I4I2c0I2' .. string.rep('I2c0I4c0', n)
    formats[n] = fmt
  end
  local args = { idx, count, #id, id, n }
  for j = 1, #fields, 2 do
    args[#args + 1] = #fields[j]
    args[#args + 1] = fields[j]
    args[#args + 1] = #fields[j + 1]
    args[#args + 1] = fields[j + 1]
  end
  return struct.pack(fmt, unpack(args))
end

for i = 0, ntopics - 1 do
  local rkey, dkey = KEYS[i * 12 + 11], KEYS[i * 12 + 12]
  local due = redis.call('ZRANGEBYSCORE', dkey, '-inf', now, 'LIMIT', 0, move_limit)
  if #due > 0 then
    ensure_retry(rkey, group)
    for _, m in ipairs(due) do
      redis.call('XADD', rkey, '*', unpack(cmsgpack.unpack(m)))
      redis.call('ZREM', dkey, m)
    end
  end
  local first = redis.call('ZRANGE', dkey, 0, 0, 'WITHSCORES')
  if first[2] then
    local s = tonumber(first[2])
    if next_due < 0 or s < next_due then next_due = s end
  end
end

-- XAUTOCLAIM looks at up to 10 x COUNT pending entries per call: resume where the last reclaim
-- of this stream stopped, so entries behind many long-running (renewed) leases are reached too.
local function reclaim(i, j)
  local idx = i * 12 + j
  local key = KEYS[idx]
  if room <= 0 or redis.call('EXISTS', key) == 0 then return end
  local c = i * 11 + j
  local r = redis.pcall('XAUTOCLAIM', key, group, consumer, min_idle, cursors[c], 'COUNT', room)
  if type(r) ~= 'table' or r.err then return end
  cursors[c] = r[1]
  for _, e in ipairs(r[2]) do
    if e[2] then
      local p = redis.call('XPENDING', key, group, e[1], e[1], 1)
      out[#out + 1] = frame(idx, e[1], p[1][4], e[2])
      room = room - 1
    end
  end
end

-- Reads up to \`room\` new entries; true when the stream has no more new ones for the group.
local function read_new(idx, since)
  local key = KEYS[idx]
  if redis.call('EXISTS', key) == 0 then return true end
  if room <= 0 then return false end
  local r = redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', room, 'STREAMS', key, '>')
  if type(r) == 'table' and r.err then
    redis.pcall('XGROUP', 'CREATE', key, group, since)
    r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', room, 'STREAMS', key, '>')
  end
  if not r then return true end
  local asked = room
  for _, e in ipairs(r[1][2]) do
    out[#out + 1] = frame(idx, e[1], 1, e[2])
  end
  room = room - #r[1][2]
  return #r[1][2] < asked
end

if min_idle > 0 then
  for k = 0, ntopics - 1 do
    for j = 1, 11 do reclaim(topic_at(k), j) end
  end
end
local retries_done = true
for k = 0, ntopics - 1 do
  if not read_new(topic_at(k) * 12 + 11, '0') then retries_done = false end
end
-- One topic whose messages all use one priority, no retries or delayed entries waiting: the
-- client may read that stream directly (XREADGROUP) until its next full claim.
local fast = 0
if ntopics == 1 and next_due < 0 and retries_done then
  for j = 1, 10 do
    if redis.call('EXISTS', KEYS[j]) == 1 then
      if fast == 0 then fast = j else fast = -1 end
    end
  end
  if fast < 0 then fast = 0 end
end
if fast > 0 and direct then
  -- Make sure the group exists on the stream the client is about to read.
  redis.pcall('XGROUP', 'CREATE', KEYS[fast], group, since_of(0))
else
  for j = 1, 10 do
    for k = 0, ntopics - 1 do
      local i = topic_at(k)
      read_new(i * 12 + j, since_of(i))
    end
  end
end
-- Nothing claimable: report each stream's newest id, so a blocking read from there misses nothing.
local tails = {}
if #out == 0 then
  for idx = 1, #KEYS do
    if idx % 12 == 0 then
      tails[idx] = ''
    else
      local last = redis.call('XREVRANGE', KEYS[idx], '+', '-', 'COUNT', 1)[1]
      tails[idx] = last and last[1] or '0-0'
    end
  end
end
return { now, next_due, table.concat(out), tails, fast, cursors }
`;

/**
 * Publishes a batch atomically. KEYS: the distinct streams of the batch. ARGV[1]: the messages
 * packed one after another: stream index u16, id (u16 length), headers JSON (u32 length), expiry
 * (u16 length; empty for none, then no `x` field), body (u32 length). Returns the number stored.
 */
export const PUBLISH = `
local s = ARGV[1]
local pos, n = 1, 0
while pos <= #s do
  local k, id, h, x, b
  k, id, h, x, b, pos = struct.unpack('>I2I2c0I4c0I2c0I4c0', s, pos)
  if x == '' then
    redis.call('XADD', KEYS[k], '*', 'i', id, 'b', b, 'h', h)
  else
    redis.call('XADD', KEYS[k], '*', 'i', id, 'b', b, 'h', h, 'x', x)
  end
  n = n + 1
end
return n
`;

/**
 * Acks the leases still held. KEYS[1] stream. ARGV: group, then \`consumer id count …\` (one
 * space-separated string; leases of several consumers of the group). Returns how many were acked.
 */
export const ACK = `${HELPERS}
local key, group = KEYS[1], ARGV[1]
local pending = pending_of(key, group, ARGV[2])
local ids = {}
for consumer, id, count in string.gmatch(ARGV[2], '(%S+) (%S+) (%S+)') do
  local e = pending[id]
  if e and e[2] == consumer and e[4] == tonumber(count) then ids[#ids + 1] = id end
end
if #ids > 0 then redis.call('XACK', key, group, unpack(ids)) end
return #ids
`;

/**
 * Renews the leases still held (resets their idle time, keeps the delivery count).
 * KEYS[1] stream. ARGV: group, then \`consumer id count …\`. Returns how many.
 */
export const EXTEND = `${HELPERS}
local key, group = KEYS[1], ARGV[1]
local pending = pending_of(key, group, ARGV[2])
local by_consumer = {}
local n = 0
for consumer, id, count in string.gmatch(ARGV[2], '(%S+) (%S+) (%S+)') do
  local e = pending[id]
  if e and e[2] == consumer and e[4] == tonumber(count) then
    local cmd = by_consumer[consumer]
    if not cmd then
      cmd = { 'XCLAIM', key, group, consumer, 0 }
      by_consumer[consumer] = cmd
    end
    cmd[#cmd + 1] = id
    n = n + 1
  end
end
for _, cmd in pairs(by_consumer) do
  cmd[#cmd + 1] = 'JUSTID'
  redis.call(unpack(cmd))
end
return n
`;

/**
 * Takes a held lease back for redelivery to the same group: at once through its retry stream,
 * or after delayMs through its delayed set. Used for nack and for releasing on close.
 * KEYS: stream, retry stream, delayed set.
 * ARGV: group, consumer, id, delivery count, delayMs, priority, published at ms, attempts made,
 * last error ('' for none: the next delivery then has none).
 * Returns 1 when requeued, 0 when the lease was no longer held.
 */
export const REQUEUE = `${HELPERS}
local key, rkey, dkey = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, id = ARGV[1], ARGV[2], ARGV[3]
if not owned(key, group, consumer, id, tonumber(ARGV[4])) then return 0 end
local e = redis.call('XRANGE', key, id, id)[1]
redis.call('XACK', key, group, id)
if not e then return 0 end
local f = requeue_fields(e[2], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
local delay = tonumber(ARGV[5])
if delay <= 0 then
  ensure_retry(rkey, group)
  redis.call('XADD', rkey, '*', unpack(f))
else
  redis.call('ZADD', dkey, now_ms() + delay, cmsgpack.pack(f))
end
return 1
`;

/**
 * Moves a held lease to the group's dead-letter stream of the topic.
 * KEYS: stream, dead-letter stream.
 * ARGV: group, consumer, id, delivery count, priority, published at ms, reason, error, attempts, topic.
 * Returns the dead-letter entry id, or false when the lease was no longer held.
 */
export const BURY = `${HELPERS}
local key, dlq = KEYS[1], KEYS[2]
local group, consumer, id = ARGV[1], ARGV[2], ARGV[3]
if not owned(key, group, consumer, id, tonumber(ARGV[4])) then return false end
local e = redis.call('XRANGE', key, id, id)[1]
redis.call('XACK', key, group, id)
if not e then return false end
local f = requeue_fields(e[2], ARGV[5], ARGV[6], '0')
for _, kv in ipairs({ { 'g', group }, { 'r', ARGV[7] }, { 'e', ARGV[8] }, { 'n', ARGV[9] }, { 'o', ARGV[10] } }) do
  f[#f + 1] = kv[1]; f[#f + 1] = kv[2]
end
f[#f + 1] = 'w'; f[#f + 1] = tostring(now_ms())
return redis.call('XADD', dlq, '*', unpack(f))
`;

/**
 * Replays a dead letter to the group's retry stream, as a first attempt.
 * KEYS: dead-letter stream, retry stream. ARGV: dead-letter entry id, group, headers JSON, expiry
 * ('' for none). Returns 1, or 0 when the dead letter is gone.
 */
export const REPLAY = `${HELPERS}
local dlq, rkey = KEYS[1], KEYS[2]
local e = redis.call('XRANGE', dlq, ARGV[1], ARGV[1])[1]
if not e then return 0 end
local src = {}
for j = 1, #e[2], 2 do src[e[2][j]] = e[2][j + 1] end
local f = { 'i', src.i, 'b', src.b, 'h', ARGV[3], 'x', ARGV[4], 'p', src.p, 't', src.t, 'a', '0' }
ensure_retry(rkey, ARGV[2])
redis.call('XADD', rkey, '*', unpack(f))
redis.call('XDEL', dlq, ARGV[1])
return 1
`;

/**
 * Retention for one stream: attaches the registered groups that match but have not read it yet,
 * then trims the entries below the oldest one some group still needs (its oldest pending entry,
 * or the first it has not been delivered), and never at or above ARGV[1] ms. Also forgets
 * consumers idle longer than ARGV[2] ms that hold nothing.
 * KEYS[1] stream. ARGV: bound ms, consumer idle ms, chunk, then group, start id pairs to attach.
 * Trims at most one chunk of whole stream nodes (\`MINID ~ … LIMIT chunk\`): a large backlog is
 * freed in steps, so Redis never blocks long. Returns { entries trimmed, the bound id }; the
 * caller trims on below that bound (it stays safe: groups only move forward).
 */
export const TRIM = `
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return { 0, '' } end
for j = 4, #ARGV, 2 do redis.pcall('XGROUP', 'CREATE', key, ARGV[j], ARGV[j + 1]) end
local function parse(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local bms, bseq = tonumber(ARGV[1]), 0
local function lower(ms, seq)
  if ms < bms or (ms == bms and seq < bseq) then bms, bseq = ms, seq end
end
local idle_limit = tonumber(ARGV[2])
for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
  local info = {}
  for j = 1, #g, 2 do info[g[j]] = g[j + 1] end
  if info.pending > 0 then
    local p = redis.call('XPENDING', key, info.name, '-', '+', 1)
    lower(parse(p[1][1]))
  end
  -- Entries after the last delivered one are undelivered; a start id at the end of a
  -- millisecond (see startId) is followed by the next millisecond.
  local ms, seq = parse(info['last-delivered-id'])
  if seq >= 9007199254740992 then lower(ms + 1, 0) else lower(ms, seq + 1) end
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', key, info.name)) do
    local ci = {}
    for j = 1, #c, 2 do ci[c[j]] = c[j + 1] end
    if ci.pending == 0 and ci.idle > idle_limit then redis.call('XGROUP', 'DELCONSUMER', key, info.name, ci.name) end
  end
end
local bound = string.format('%d-%d', bms, bseq)
return { redis.call('XTRIM', key, 'MINID', '~', bound, 'LIMIT', tonumber(ARGV[3])), bound }
`;
