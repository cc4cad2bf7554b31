//! The Lua scripts that keep a topic's offsets, epoch, history and idempotency in Redis. Each
//! runs atomically in one round trip; `redis::Script` sends EVALSHA and loads the script again
//! when Redis answers NOSCRIPT (after a restart).
//!
//! Keys of a topic `t` (all tagged `{t}`): `rt:h:{t}` a stream whose entry ids are the offsets
//! (`<offset>-0`) with fields `f` (the message in the cluster's compact encoding, see
//! `wire::encode_message`), `m` (the caller's message id, or empty) and `t` (when, unix ms);
//! `rt:hm:{t}` a hash with `e` (epoch) and `s` (latest offset); `rt:i:{t}:<id>` the result of a
//! publish with a caller-chosen id, kept as long as the history (idempotency).

/// Publish (run after [`super::counts::LIVE`]). KEYS: stream, meta, idempotency key (or the
/// prefix alone when there is no id), topic index (not for a user stream, whose name starts
/// `#`), the topic's counts (its user's for a user stream). ARGV: the message (compact
/// encoding), the pub/sub header line, history size, history ttl ms, meta ttl ms, a fresh
/// epoch, the caller's id (or ""), channel, now ms, topic. Publishes
/// `header .. "<offset> <epoch>\n" .. message`: the script adds only the position. Returns
/// {offset, epoch, connections} (the live nodes' counts: nobody is asked) or
/// {offset, epoch, -1} for a duplicate.
pub const PUBLISH: &str = r#"
local stream, meta, idem, index, counts = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local body, head = ARGV[1], ARGV[2]
local size, ttl, meta_ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local new_epoch, id, channel, now, topic = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
if id ~= '' then
  local prev = redis.call('HMGET', idem, 'o', 'e')
  if prev[1] then
    return {tonumber(prev[1]), prev[2], -1}
  end
end
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = new_epoch
  redis.call('HSET', meta, 'e', epoch)
end
local offset = redis.call('HINCRBY', meta, 's', 1)
redis.call('PEXPIRE', meta, meta_ttl)
if offset == 1 then
  redis.call('DEL', stream)
end
if size > 0 then
  redis.call('XADD', stream, 'MAXLEN', size, offset .. '-0', 'f', body, 'm', id, 't', now)
  redis.call('PEXPIRE', stream, ttl)
  if string.sub(topic, 1, 1) ~= '#' then
    redis.call('ZADD', index, now, topic)
  end
end
if id ~= '' then
  redis.call('HSET', idem, 'o', offset, 'e', epoch)
  redis.call('PEXPIRE', idem, ttl)
end
redis.call('PUBLISH', channel, head .. offset .. ' ' .. epoch .. '\n' .. body)
return {offset, epoch, live(counts)}
"#;

/// Delivery of a message that is not kept (run after [`super::counts::LIVE`]). KEYS: what
/// counts the recipients: a hash node -> count (kind `h`: a user's or a role's), one node's
/// live connection ids (`c`), or the set of nodes (`a`, everyone). ARGV: kind, channel,
/// the pub/sub message, and for `c` the connection id and its node. Returns how many
/// connections it reaches, or -1 for a connection that is not live (nothing published).
pub const DELIVER: &str = r#"
local kind, channel, msg = ARGV[1], ARGV[2], ARGV[3]
if kind == 'c' then
  if not alive(ARGV[5]) or redis.call('SISMEMBER', KEYS[1], ARGV[4]) == 0 then
    return -1
  end
  redis.call('PUBLISH', channel, msg)
  return 1
end
redis.call('PUBLISH', channel, msg)
if kind == 'h' then
  return live(KEYS[1])
end
local t = 0
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if alive(node) then
    t = t + redis.call('SCARD', 'rt:cx:' .. node)
  end
end
return t
"#;

/// Read. KEYS: stream, meta. ARGV: since (or -1), count, meta ttl ms, a fresh epoch, create
/// (1: make the epoch when the topic has none), reverse (1: newest first, offsets below
/// `since`, or from the top when it is -1; else oldest first, offsets above `since`, and
/// nothing for -1). `count` is at least 1 (the caller answers a count of 0 itself).
/// Returns {epoch, latest, entries} (entries as XRANGE gives them), or {"", 0, {}} for a topic
/// with no state when create is 0.
pub const READ: &str = r#"
local stream, meta = KEYS[1], KEYS[2]
local since, count, meta_ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local new_epoch, create, reverse = ARGV[4], ARGV[5], ARGV[6]
local epoch = redis.call('HGET', meta, 'e')
local latest = tonumber(redis.call('HGET', meta, 's') or '0')
if not epoch then
  if create ~= '1' then
    return {'', 0, {}}
  end
  epoch = new_epoch
  redis.call('HSET', meta, 'e', epoch, 's', latest)
end
redis.call('PEXPIRE', meta, meta_ttl)
if reverse == '1' then
  if since == 0 or since == 1 then
    return {epoch, latest, {}}
  end
  local top = '+'
  if since > 0 then
    top = (since - 1) .. '-0'
  end
  return {epoch, latest, redis.call('XREVRANGE', stream, top, '-', 'COUNT', count)}
end
if since < 0 or since >= latest then
  return {epoch, latest, {}}
end
return {epoch, latest, redis.call('XRANGE', stream, (since + 1) .. '-0', '+', 'COUNT', count)}
"#;
