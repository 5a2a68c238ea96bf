//! The Lua scripts the queue runs on each Redis server, and the helpers
//! that add them to a pipeline. Times in them are the server's own clock.

/// Done on one server: `KEYS` = key, first, tries, errors, pushes, due; `ARGV`
/// = item, push count read at claim (`""`: none), item, count, ... Removes
/// an item only if its count is unchanged; returns how many it removed.
pub(super) const REMOVE_DONE: &str = r#"
local removed = 0
for i = 1, #ARGV, 2 do
  local item, want = ARGV[i], ARGV[i + 1]
  local have = redis.call('HGET', KEYS[5], item)
  if (have == false and want == '') or have == want then
    redis.call('SREM', KEYS[1], item)
    redis.call('ZREM', KEYS[2], item)
    redis.call('HDEL', KEYS[3], item)
    redis.call('HDEL', KEYS[4], item)
    redis.call('HDEL', KEYS[5], item)
    redis.call('ZREM', KEYS[6], item)
    removed = removed + 1
  end
end
return removed
"#;

/// The server's clock in ms, in a script. Due and first-queued times are
/// each Redis server's own clock, never a daemon's: daemons whose clocks
/// disagree by minutes still agree on when a task is due. (Scripts that
/// write after `TIME` need effects replication: the default since Redis 5,
/// asked for explicitly on older servers.)
pub(super) const SERVER_NOW: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

/// Sets scores in the sorted set `KEYS[1]` to the server's time (ms) plus
/// an offset: `ARGV[1]` is `NX` (new members only), `XX` (existing only)
/// or `ANY`, then pairs of item and offset (ms). Returns the server's time.
pub(super) const ZADD_FROM_NOW: &str = r#"
for i = 2, #ARGV, 2 do
  local score = now + tonumber(ARGV[i + 1])
  if ARGV[1] == 'ANY' then
    redis.call('ZADD', KEYS[1], score, ARGV[i])
  else
    redis.call('ZADD', KEYS[1], ARGV[1], score, ARGV[i])
  end
end
return now
"#;

/// Up to `ARGV[2]` items of `KEYS[1]` (the queue set) that are due by the
/// server's time in `KEYS[2]` (the due times), from a random place
/// (`ARGV[1]` in 0..1) among the due ones so that workers spread out.
/// Due entries of items no longer queued (done by an original replicator)
/// are dropped; when too few are due, a sample of the set adopts items
/// without a due time (pushed by an original daemon) as due now.
pub(super) const DUE_CANDIDATES: &str = r#"
local want = tonumber(ARGV[2])
local n = redis.call('ZCOUNT', KEYS[2], '-inf', now)
local off = math.floor(tonumber(ARGV[1]) * math.max(0, n - want))
local out = {}
for _, item in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', off, want)) do
  if redis.call('SISMEMBER', KEYS[1], item) == 1 then
    table.insert(out, item)
  else
    redis.call('ZREM', KEYS[2], item)
  end
end
if #out < want then
  for _, item in ipairs(redis.call('SRANDMEMBER', KEYS[1], want)) do
    if redis.call('ZSCORE', KEYS[2], item) == false then
      redis.call('ZADD', KEYS[2], now, item)
      table.insert(out, item)
    end
  end
end
return out
"#;

/// `SERVER_NOW` then `body`: one script.
pub(super) fn with_server_now(body: &str) -> String {
    format!("{SERVER_NOW}{body}")
}

/// Adds to `p` an `EVAL` of [`ZADD_FROM_NOW`] on `set` (its answer
/// ignored): each item's score becomes the server's time plus its offset.
pub(super) fn zadd_from_now<'a>(
    p: &mut redis::Pipeline,
    set: &str,
    mode: &str,
    items: impl IntoIterator<Item = (&'a str, u64)>,
) {
    let cmd = p
        .cmd("EVAL")
        .arg(with_server_now(ZADD_FROM_NOW))
        .arg(1)
        .arg(set)
        .arg(mode);
    for (item, offset_ms) in items {
        cmd.arg(item).arg(offset_ms);
    }
    cmd.ignore();
}
