"""The Lua scripts of :class:`~prismcache.stores.redis.RedisStore`: every mutation is one script.

Every script starts with :data:`PRELUDE`. ``ARGV[1]`` is the **namespace** of the keys it
touches: the store's prefix on one Redis (``prism:``), the prefix plus a bucket's hash tag on a
Redis Cluster (``prism:{pc:b07}``), so a script only ever touches keys of one slot. ``KEYS[1]``
is a key of that namespace, declared so a cluster client routes the call to the node that
owns the slot (the scripts build the other key names from ``P``). ``ARGV[2]`` is the change
stream's MAXLEN. The key layout is described in :mod:`prismcache.stores.redis`.
"""

from __future__ import annotations

BATCH = 512  # ids per scan page, per delete script call, per expire script call, touches per call
REAP = 256  # natively expired ids reconciled per script call

# Shared by every script: ARGV[1] is the namespace, ARGV[2] the stream's MAXLEN.
PRELUDE = r"""
local P = ARGV[1]
local MAXLEN = ARGV[2]
local function unindex(id, blob)
  local r = cjson.decode(blob)
  redis.call('DEL', P .. 'e:' .. id)
  redis.call('HDEL', P .. 'refs', id)
  redis.call('ZREM', P .. 'ids', id)
  redis.call('ZREM', P .. 'exp', id)
  redis.call('ZREM', P .. 'c:' .. r[1], r[8])
  redis.call('SREM', P .. 't:' .. r[6], id)
  redis.call('SREM', P .. 'm:' .. r[7], id)
  redis.call('SREM', P .. 'p:' .. r[2], id)
  local n = redis.call('HINCRBY', P .. 'usage', 'n:' .. r[1], -1)
  redis.call('HINCRBY', P .. 'usage', 'b:' .. r[1], -tonumber(r[4]))
  if n <= 0 then redis.call('HDEL', P .. 'usage', 'n:' .. r[1], 'b:' .. r[1]) end
  redis.call('XADD', P .. 'changes', 'MAXLEN', '~', MAXLEN, '*',
             'op', 'delete', 'id', id, 'ref', blob)
end
-- Unindex the lowest entry of category cat's eviction order: its id, ref and size, or nil
-- when the order is empty (a member whose ref is gone is dropped and the next one tried).
local function evict_lowest(cat)
  local zkey = P .. 'c:' .. cat
  while true do
    local first = redis.call('ZRANGE', zkey, 0, 0)
    if #first == 0 then return nil end
    local id = string.sub(first[1], 17)
    local blob = redis.call('HGET', P .. 'refs', id)
    if blob then
      unindex(id, blob)
      return id, blob, tonumber(cjson.decode(blob)[4])
    end
    redis.call('ZREM', zkey, first[1])
  end
end
-- Record a hit on id at now: hits + 1, last access, priority, its place in the eviction
-- order. A missing id is ignored; one whose hash Redis expired natively is unindexed.
local function touch(id, now, priority, member)
  local blob = redis.call('HGET', P .. 'refs', id)
  if not blob then return end
  local key = P .. 'e:' .. id
  if redis.call('EXISTS', key) == 0 then unindex(id, blob) return end
  redis.call('HINCRBY', key, 'hits', 1)
  redis.call('HSET', key, 'last_access', now, 'priority', priority)
  local r = cjson.decode(blob)
  redis.call('ZREM', P .. 'c:' .. r[1], r[8])
  redis.call('ZADD', P .. 'c:' .. r[1], priority, member)
  r[5] = priority
  r[8] = member
  redis.call('HSET', P .. 'refs', id, cjson.encode(r))
end
local function reap(limit, out)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local due = redis.call('ZRANGEBYSCORE', P .. 'exp', '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    if redis.call('EXISTS', P .. 'e:' .. id) == 0 then
      local blob = redis.call('HGET', P .. 'refs', id)
      if blob then
        unindex(id, blob)
        if out then out[#out + 1] = id; out[#out + 1] = blob end
      else
        redis.call('ZREM', P .. 'exp', id)
      end
    end
  end
end
"""

# ARGV: 3 id, 4 ref json, 5 priority, 6 member, 7 category, 8 tenant, 9 model, 10 size,
# 11 expires or '', 12 epoch token, 13 n hash args, then the hash args, then the event's.
PUT = PRELUDE + r"""
local id = ARGV[3]
local old = redis.call('HGET', P .. 'refs', id)
if old then unindex(id, old) end
local key = P .. 'e:' .. id
local nh = tonumber(ARGV[13])
redis.call('HSET', key, unpack(ARGV, 14, 13 + nh))
redis.call('HSET', P .. 'refs', id, ARGV[4])
redis.call('ZADD', P .. 'ids', 0, id)
redis.call('ZADD', P .. 'c:' .. ARGV[7], ARGV[5], ARGV[6])
redis.call('SADD', P .. 't:' .. ARGV[8], id)
redis.call('SADD', P .. 'm:' .. ARGV[9], id)
redis.call('SADD', P .. 'p:' .. cjson.decode(ARGV[4])[2], id)
redis.call('HINCRBY', P .. 'usage', 'n:' .. ARGV[7], 1)
redis.call('HINCRBY', P .. 'usage', 'b:' .. ARGV[7], ARGV[10])
if ARGV[11] ~= '' then
  redis.call('ZADD', P .. 'exp', ARGV[11], id)
  local t = redis.call('TIME')
  local at = math.floor(tonumber(ARGV[11]) * 1000)
  if at > tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) then
    redis.call('PEXPIREAT', key, at)
  end
end
redis.call('SET', P .. 'epoch', ARGV[12], 'NX')
redis.call('XADD', P .. 'changes', 'MAXLEN', '~', MAXLEN, '*', unpack(ARGV, 14 + nh, #ARGV))
"""

# ARGV: 3.. touches, four arguments each: id, now, priority, new eviction member.
TOUCH = PRELUDE + r"""
for i = 3, #ARGV, 4 do touch(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]) end
"""

# ARGV: 3 id, 4.. touches as in TOUCH, applied first (a hit's touch rides in the next read).
# Returns the entry's hash as {field, value, ...}, empty when it is gone; an id Redis
# expired natively but still indexed is unindexed on the way.
GET = PRELUDE + r"""
for i = 4, #ARGV, 4 do touch(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]) end
local id = ARGV[3]
local row = redis.call('HGETALL', P .. 'e:' .. id)
if #row == 0 then
  local blob = redis.call('HGET', P .. 'refs', id)
  if blob then unindex(id, blob) end
end
return row
"""

# ARGV: 3 'all' (delete) or 'gone' (only ids whose hash Redis expired), 4.. ids.
DELETE = PRELUDE + r"""
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local blob = redis.call('HGET', P .. 'refs', id)
  if blob and (ARGV[3] == 'all' or redis.call('EXISTS', P .. 'e:' .. id) == 0) then
    unindex(id, blob)
    out[#out + 1] = id; out[#out + 1] = blob
  end
end
return out
"""

# ARGV: 3 now, 4 limit. Returns {number due, id, ref, id, ref, ...}.
EXPIRE = PRELUDE + r"""
local out = {0}
reap(tonumber(ARGV[4]), out)
local due = redis.call('ZRANGEBYSCORE', P .. 'exp', '-inf', ARGV[3], 'LIMIT', 0, ARGV[4])
out[1] = #due
for _, id in ipairs(due) do
  local blob = redis.call('HGET', P .. 'refs', id)
  if blob then
    unindex(id, blob)
    out[#out + 1] = id; out[#out + 1] = blob
  else
    redis.call('ZREM', P .. 'exp', id)
  end
end
return out
"""

# ARGV: 3 category, 4 max entries or '', 5 max bytes or ''.
EVICT = PRELUDE + r"""
reap(""" + str(REAP) + r""")
local cat = ARGV[3]
local n = tonumber(redis.call('HGET', P .. 'usage', 'n:' .. cat) or '0')
local b = tonumber(redis.call('HGET', P .. 'usage', 'b:' .. cat) or '0')
local maxn = tonumber(ARGV[4])
local maxb = tonumber(ARGV[5])
local out = {}
while (maxn and n > maxn) or (maxb and b > maxb) do
  local id, blob, size = evict_lowest(cat)
  if not id then break end
  n, b = n - 1, b - size
  out[#out + 1] = id; out[#out + 1] = blob
end
return out
"""

# ARGV: 3 admitting category, 4 capacity entries, 5 capacity bytes or '', 6 number of
# categories k, then k triples: name, share, ceiling or ''. Restates Quotas.next_victim
# (prismcache/quotas.py), the one statement of the rule: keep the two in step.
EVICT_FOR = PRELUDE + r"""
reap(""" + str(REAP) + r""")
local admitting = ARGV[3]
local capn = tonumber(ARGV[4])
local capb = tonumber(ARGV[5])
local shares, ceilings = {}, {}
for i = 0, tonumber(ARGV[6]) - 1 do
  local name = ARGV[7 + 3 * i]
  shares[name] = tonumber(ARGV[8 + 3 * i])
  ceilings[name] = tonumber(ARGV[9 + 3 * i])
end
local n, b = {}, {}
local flat = redis.call('HGETALL', P .. 'usage')
for i = 1, #flat, 2 do
  local kind, cat = string.sub(flat[i], 1, 1), string.sub(flat[i], 3)
  if kind == 'n' then n[cat] = tonumber(flat[i + 1]) else b[cat] = tonumber(flat[i + 1]) end
end
-- Python orders str by code point = UTF-8 byte order; Lua's '<' follows the locale.
local function before(x, y)
  for i = 1, math.min(#x, #y) do
    local cx, cy = string.byte(x, i), string.byte(y, i)
    if cx ~= cy then return cx < cy end
  end
  return #x < #y
end
local function victim()
  local over, tn, tb = nil, 0, 0
  for cat, count in pairs(n) do
    if count > 0 then
      local size = b[cat] or 0
      tn, tb = tn + count, tb + size
      local c = ceilings[cat]
      if c and (count > math.floor(c * capn) or (capb and size > math.floor(c * capb)))
         and (over == nil or before(cat, over)) then over = cat end
    end
  end
  if over then return over end
  local fulln, fullb = tn > capn, capb ~= nil and tb > capb
  if not (fulln or fullb) then return nil end
  local best, most = nil, 0.0
  for cat, count in pairs(n) do
    if count > 0 then
      local share = shares[cat] or 0.0
      local above = -1.0
      if fulln then above = count / capn - share end
      if fullb then above = math.max(above, (b[cat] or 0) / capb - share) end
      if above > most or (best ~= nil and above == most and before(cat, best)) then
        best, most = cat, above
      end
    end
  end
  if best == nil and (n[admitting] or 0) > 0 then return admitting end
  return best
end
local out = {}
while true do
  local cat = victim()
  if cat == nil then break end
  local id, blob, size = evict_lowest(cat)
  if not id then break end
  n[cat], b[cat] = n[cat] - 1, (b[cat] or 0) - size
  out[#out + 1] = id; out[#out + 1] = blob
end
return out
"""

# ARGV: 3..8 flag and value of tenant, category, model. Returns {id, ref, ...}.
FIND = PRELUDE + r"""
reap(""" + str(REAP) + r""")
local tf, tenant, cf, cat, mf, model = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local ids
if tf == '1' and mf == '1' then
  ids = redis.call('SINTER', P .. 't:' .. tenant, P .. 'm:' .. model)
elseif tf == '1' then
  ids = redis.call('SMEMBERS', P .. 't:' .. tenant)
elseif mf == '1' then
  ids = redis.call('SMEMBERS', P .. 'm:' .. model)
elseif cf == '1' then
  ids = redis.call('ZRANGE', P .. 'c:' .. cat, 0, -1)
  for i, member in ipairs(ids) do ids[i] = string.sub(member, 17) end
else
  ids = redis.call('ZRANGE', P .. 'ids', 0, -1)
end
local out = {}
for _, id in ipairs(ids) do
  local blob = redis.call('HGET', P .. 'refs', id)
  if blob and (cf ~= '1' or cjson.decode(blob)[1] == cat) then
    out[#out + 1] = id; out[#out + 1] = blob
  end
end
return out
"""

USAGE = PRELUDE + r"""
reap(""" + str(REAP) + r""")
return redis.call('HGETALL', P .. 'usage')
"""
