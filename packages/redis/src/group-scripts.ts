/**
 * The Lua scripts of the group registry (the hash `<prefix>:groups`, group → JSON entry
 * `{ patterns: { <pattern>: <declared at> }, ephemeral?: <held until> }`, server ms). An
 * ephemeral group's entry carries the time its subscription last promised to renew it by; once
 * that has passed, the group is gone for routing and the next retention pass removes it.
 */

const NOW = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

/**
 * Declares `pattern` for `group`, remembering when (server time) it was first declared: the group
 * receives what is published to matching topics from then on. With ttlMs > 0 the group is
 * ephemeral, held for ttlMs. KEYS[1] groups hash. ARGV: group, pattern, ttlMs (0: durable).
 * Returns { status, entry JSON }: `ok` (declared), `durable` / `ephemeral` (the group exists as
 * the other kind), `taken` (a live ephemeral group: it has its subscriber), `expired` (an
 * ephemeral group past its deadline, not yet removed: remove it, then declare again).
 */
export const DECLARE = `${NOW}
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[3]) or 0
local now = now_ms()
local g = cur and cjson.decode(cur) or nil
if g then
  if g.ephemeral then
    if g.ephemeral <= now then return { 'expired', cur } end
    return { ttl > 0 and 'taken' or 'ephemeral', cur }
  end
  if ttl > 0 then return { 'durable', cur } end
else
  g = { patterns = {} }
  if ttl > 0 then g.ephemeral = now + ttl end
end
if g.patterns[ARGV[2]] == nil or cur == nil then
  g.patterns[ARGV[2]] = g.patterns[ARGV[2]] or now
  cur = cjson.encode(g)
  redis.call('HSET', KEYS[1], ARGV[1], cur)
end
return { 'ok', cur }
`;

/**
 * Renews an ephemeral group for ttlMs from now. A group that is gone (removed after its deadline
 * passed) is declared again for `pattern`, from now. KEYS[1] groups hash. ARGV: group, pattern,
 * ttlMs. Returns { 1 when declared again, 0 renewed, -1 the name is a durable group's; entry }.
 */
export const RENEW = `${NOW}
local now = now_ms()
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local g = cur and cjson.decode(cur) or nil
local fresh = 0
if g and not g.ephemeral then return { -1, cur } end
if not g then
  g = { patterns = {} }
  g.patterns[ARGV[2]] = now
  fresh = 1
end
g.ephemeral = now + tonumber(ARGV[3])
cur = cjson.encode(g)
redis.call('HSET', KEYS[1], ARGV[1], cur)
return { fresh, cur }
`;

/**
 * Takes an ephemeral group out of the registry: always (ARGV[2] = '1', its subscription closed)
 * or only once its deadline passed ('0', the sweep). KEYS[1] groups hash. ARGV: group, force.
 * Returns the entry JSON when it was taken out (the caller then removes what the group holds),
 * false otherwise (no such group, a durable one, or still held).
 */
export const FORGET = `${NOW}
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return false end
local g = cjson.decode(cur)
if not g.ephemeral then return false end
if ARGV[2] ~= '1' and g.ephemeral > now_ms() then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
return cur
`;

/**
 * Deletes a topic's stream that no group reads any more: when no consumer group is attached, its
 * entries below ARGV[1] (the time the registry was found to hold no group for the topic) are
 * trimmed, and the key goes once that leaves it empty. A group declared after that time starts
 * after it, so it loses nothing. KEYS[1] stream. Returns 1 when the stream is gone.
 */
export const DROP_STREAM = `
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then return 1 end
if #redis.call('XINFO', 'GROUPS', k) > 0 then return 0 end
redis.call('XTRIM', k, 'MINID', ARGV[1])
if redis.call('XLEN', k) > 0 then return 0 end
redis.call('DEL', k)
return 1
`;
