-- REOPEN: put a finished job whose results include suspect ones (revoke.lua flagged them: a worker
-- that returned them was later caught cheating) back to running, with those chunks queued to be
-- recomputed elsewhere. Its final result, image and counts are dropped; its other chunks stay merged
-- (the caller restores parts that finalize compacted into the image, from the job's counts).
-- uses: _leases
-- Returns 1 REOPENED, 0 NOT_FLAGGED (the job is not done, or nothing in it is suspect), -3 STALE (the
-- suspect chunks changed since the caller read them: nothing changed).
local job = KEYS[1]          -- hash: state, counters, result
local active = KEYS[2]       -- zset: the active jobs
local done = KEYS[3]         -- set: merged chunk ids
local parts = KEYS[4]        -- hash: chunk id -> merged part JSON
local job_workers = KEYS[5]  -- hash: "{worker}|{field}" -> per-worker work counters
local todo = KEYS[6]         -- list: chunk ids waiting
local suspect = KEYS[7]      -- hash: chunk id -> flags JSON (worker, units, increments)
local image = KEYS[8]        -- string: the finished image
local counts = KEYS[9]       -- string: the finished counts
local totals = KEYS[10]      -- hash: finished jobs per state and their counters summed (finish.lua)
local chunks = KEYS[11]      -- hash: chunk id -> spec (a compacted job gets back the specs it needs)
local finished = KEYS[12]    -- zset: finished jobs (it leaves it while live again)
-- KEYS[13..]: the lease hash of each suspect chunk, in the order of the manifest
local now = ARGV[1]
local job_id = ARGV[2]
local score = ARGV[3]        -- the job's place in the active zset (jobs/store._active_score)
local restored = cjson.decode(ARGV[4])   -- {chunk id: part JSON} to put back (non-suspect chunks)
local manifest = cjson.decode(ARGV[5])   -- {{chunk id, flags JSON as read}, ...}
local counters = cjson.decode(ARGV[6])   -- the counter fields finish.lua added to the totals
local specs = cjson.decode(ARGV[7])      -- {chunk id: spec JSON} to put back (a compacted job's)

if redis.call('HGET', job, 'state') ~= 'done' then return 0 end
if redis.call('HLEN', suspect) == 0 then return 0 end
if redis.call('HLEN', suspect) ~= #manifest then return -3 end
for _, item in ipairs(manifest) do
  if redis.call('HGET', suspect, item[1]) ~= item[2] then return -3 end
end

-- The job is live again: it leaves the finished totals (finish.lua adds it back when it ends).
redis.call('HINCRBY', totals, 'done', -1)
for _, name in ipairs(counters) do
  local value = redis.call('HGET', job, name)
  if value and value ~= '0' then redis.call('HINCRBY', totals, name, '-' .. value) end
end
for chunk, spec in pairs(specs) do redis.call('HSET', chunks, chunk, spec) end
for chunk, part in pairs(restored) do redis.call('HSET', parts, chunk, part) end
for i, item in ipairs(manifest) do
  local chunk, flags = item[1], cjson.decode(item[2])
  redis.call('SREM', done, chunk)
  redis.call('HDEL', parts, chunk)
  redis.call('HINCRBY', job, 'chunks_done', -1)
  for field, value in pairs(flags.increments) do
    if value ~= '0' then redis.call('HINCRBY', job, field, '-' .. value) end
  end
  redis.call('HINCRBY', job_workers, flags.worker .. '|chunks', -1)
  redis.call('HINCRBY', job_workers, flags.worker .. '|units', -flags.units)
  redis.call('HSET', KEYS[12 + i], 'queued', '1')
  redis.call('LPUSH', todo, chunk)
  redis.call('HINCRBY', job, 'redispatched', 1)
  redis.call('HINCRBY', job, 'recomputed', 1)
end
redis.call('DEL', suspect, image, counts)
redis.call('HDEL', job, 'result', 'finished_at', 'suspect')
redis.call('HSET', job, 'state', 'running', 'updated_at', now)
redis.call('HINCRBY', job, 'reopened', 1)
redis.call('ZADD', active, score, job_id)
redis.call('ZREM', finished, job_id)
return 1
