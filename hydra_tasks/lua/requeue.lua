-- REQUEUE: take a chunk back from its lease and put it first in the job's queue.
-- uses: _leases
--
-- Without force only an expired lease (the sweeper); with force (a failure, rejection or decline)
-- only a live lease, and only when reported by its holder or backup.
-- Returns {n, holder}: n >= 1 is the lease's new value of the counter; or {-1} nothing to take
-- back, {-2, holder} the chunk was merged or the job is over, {-3} STALE (the holders changed).
local leases = KEYS[1]       -- zset: "{job}:{chunk}" -> lease deadline
local todo = KEYS[2]         -- list: chunk ids waiting (LPUSH: retried first); for an audit chunk, the
                             -- audits zset (member -> when re-queued; trust/audits.py)
local job = KEYS[3]          -- hash: state, redispatched and the counter
local done = KEYS[4]         -- set: merged chunk ids
local lease = KEYS[5]        -- hash: the chunk's lease
local job_leases = KEYS[6]   -- zset: the job's leases (chunk id -> deadline)
local member = ARGV[1]
local chunk = ARGV[2]
local now = tonumber(ARGV[3])
local counter = ARGV[4]      -- expiries | failures | rejections | declines
local force = ARGV[5] == '1'
local reporter = ARGV[6]
local holder = ARGV[7]       -- the lease's worker and backup as the caller read them ('' = none);
local backup = ARGV[8]       -- their in-flight sets follow in KEYS[7..]
local audit = ARGV[9] == '1' -- an audit chunk: back into the audits zset
local holder_key, backup_key = inflight_keys(7, holder, backup)

local score = redis.call('ZSCORE', leases, member)
if not score then return {-1} end
if not force and tonumber(score) > now then return {-1} end
if force and redis.call('HGET', lease, 'worker') ~= reporter and redis.call('HGET', lease, 'backup') ~= reporter then
  return {-1}
end
if not holders_are(lease, holder, backup) then return {-3} end
redis.call('ZREM', leases, member)
redis.call('ZREM', job_leases, chunk)
release(lease, member, holder_key, backup_key)
if redis.call('SISMEMBER', done, chunk) == 1 or not live(redis.call('HGET', job, 'state')) then
  redis.call('DEL', lease)
  return {-2, holder}
end
local n = redis.call('HINCRBY', lease, counter, 1)
if redis.call('HGET', lease, 'queued') ~= '1' then
  redis.call('HSET', lease, 'queued', '1')
  if audit then redis.call('ZADD', todo, now, member) else redis.call('LPUSH', todo, chunk) end
  redis.call('HINCRBY', job, 'redispatched', 1)
end
redis.call('HINCRBY', job, counter, 1)
return {n, holder}
