-- GRANT: lease one chunk of a job to one worker: exactly the chunk the caller peeked at.
-- uses: _leases
--
-- The caller (lua.Scripts.grant) reads the job's next chunk first, so every key is known up front:
-- a re-queued chunk first ('todo'), then the heaviest or lightest waiting tile ('tile'), else, for
-- kinds cut lazily, a new range [cursor, cursor + count) whose spec the caller built ('cut'). If
-- the job moved on meanwhile (another control process granted it), nothing changes: MOVED.
-- A chunk taken from todo was released when it was re-queued, so it has no holder to release.
-- The lease's deadline is final here: 3x the chunk's expected time on this worker, at least lease_s.
-- An audit chunk (source 'audit', trust/audits.py) waits in the audits zset, not in the job's queue,
-- and goes only to a worker of good standing (at least auditor_min clean audits) other than the one
-- whose result it audits.
-- Returns {1 LEASED, attempt, spec} | {0 FULL} (the worker's window is full, or it is not online or is
-- quarantined) | {-1 EMPTY} (the job is over) | {2 MOVED} | {3 NOT_ELIGIBLE} (not this audit's auditor).
local job = KEYS[1]          -- hash: state, cursor, chunks_total, dispatched, started_at
local todo = KEYS[2]         -- list: chunk ids waiting (re-queued first)
local tiles = KEYS[3]        -- zset: adaptive tiles by estimated cost
local chunks = KEYS[4]       -- hash: chunk id -> chunk spec JSON
local leases = KEYS[5]       -- zset: "{job}:{chunk}" -> lease deadline
local lease = KEYS[6]        -- hash: this chunk's lease
local inflight = KEYS[7]     -- set: the worker's leased chunks
local worker_rec = KEYS[8]   -- hash: the worker's record (a worker gone offline or revoked gets nothing)
local audits = KEYS[9]       -- zset: audit chunks waiting, of every job ("{job}:{chunk}" -> when requested)
local job_audits = KEYS[10]  -- hash: the job's audit chunk id -> {of, worker, blocks} JSON
local job_leases = KEYS[11]  -- zset: the job's leased chunk ids -> lease deadline
local source = ARGV[1]       -- 'todo' | 'tile' | 'cut' | 'audit'
local chunk = ARGV[2]
local member = ARGV[3]       -- "{job}:{chunk}"
local worker = ARGV[4]
local region = ARGV[5]
local now = ARGV[6]
local capacity = tonumber(ARGV[7])
local lease_s = tonumber(ARGV[8])   -- HYDRA_LEASE_S, the shortest lease
local rate = tonumber(ARGV[9])      -- the worker's speed, in the chunk's work units per second
local order = ARGV[10]              -- 'tile': 'max' (heaviest first) or 'min'
local cursor = ARGV[11]             -- 'cut': the job's cursor the caller saw
local total = ARGV[12]              -- 'cut': the job's chunks_total the caller saw
local count = ARGV[13]              -- 'cut': units in the new range
local cut_spec = ARGV[14]           -- 'cut': the new chunk's spec JSON
local auditor_min = tonumber(ARGV[15])  -- 'audit': the clean audits an auditor needs

local state = redis.call('HGET', job, 'state')
if not live(state) then return {-1} end
if redis.call('SCARD', inflight) >= capacity then return {0} end
-- The caller's snapshot may be older than a revocation or a shutdown: only an online worker gets work.
if redis.call('HGET', worker_rec, 'state') ~= 'online' then return {0} end
local quarantined = redis.call('HGET', worker_rec, 'quarantined')
if quarantined and quarantined ~= '' then return {0} end  -- caught by a spot check (trust/reputation.py)
-- Find the chunk and check everything before the first write: a script that fails half-way keeps
-- its earlier writes (Redis does not roll back), so nothing may fail after one.
local spec
if source == 'todo' then
  if redis.call('LINDEX', todo, 0) ~= chunk then return {2} end
  spec = redis.call('HGET', chunks, chunk)
elseif source == 'tile' then
  local top = redis.call('ZRANGE', tiles, 0, 0)
  if order == 'max' then top = redis.call('ZREVRANGE', tiles, 0, 0) end
  if redis.call('LLEN', todo) > 0 or top[1] ~= chunk then return {2} end
  spec = redis.call('HGET', chunks, chunk)
elseif source == 'cut' then
  if redis.call('LLEN', todo) > 0 or redis.call('ZCARD', tiles) > 0
     or (redis.call('HGET', job, 'cursor') or '0') ~= cursor
     or (redis.call('HGET', job, 'chunks_total') or '0') ~= total
     or redis.call('HEXISTS', chunks, chunk) == 1 then return {2} end
  spec = cut_spec
elseif source == 'audit' then
  if not redis.call('ZSCORE', audits, member) then return {2} end
  local meta = redis.call('HGET', job_audits, chunk)
  if not meta or cjson.decode(meta)['worker'] == worker
     or tonumber(redis.call('HGET', worker_rec, 'audits_passed') or '0') < auditor_min then return {3} end
  spec = redis.call('HGET', chunks, chunk)
else
  return redis.error_reply('GRANT: unknown source ' .. tostring(source))
end
if not spec then return redis.error_reply('GRANT: chunk ' .. chunk .. ' has no spec') end
local decoded = cjson.decode(spec)
local work = tonumber(decoded['units'])
if type(decoded['params']) == 'table' and decoded['params']['est_cost'] then
  work = tonumber(decoded['params']['est_cost'])
end
if not work then return redis.error_reply('GRANT: chunk ' .. chunk .. ' has no units') end

if source == 'todo' then
  redis.call('LPOP', todo)
elseif source == 'tile' then
  redis.call('ZREM', tiles, chunk)
elseif source == 'audit' then
  redis.call('ZREM', audits, member)
else
  redis.call('HSET', job, 'cursor', string.format('%d', tonumber(cursor) + tonumber(count)))
  redis.call('HINCRBY', job, 'chunks_total', 1)
  redis.call('HSET', chunks, chunk, cut_spec)
end
local deadline = tonumber(now) + math.max(lease_s, 3.0 * work / math.max(rate, 1.0))
redis.call('ZADD', leases, string.format('%.6f', deadline), member)
redis.call('ZADD', job_leases, string.format('%.6f', deadline), chunk)
local attempt = redis.call('HINCRBY', lease, 'attempt', 1)
-- 'window': the chunks the worker may hold now (a window of bundles is larger); it bounds how fast its
-- result may say it computed this one (jobs/collect.observed_elapsed)
redis.call('HSET', lease, 'worker', worker, 'region', region, 'dispatched_at', now, 'queued', '0',
           'window', capacity, 'leased:' .. worker, '1')  -- every worker ever sent this chunk may return it
redis.call('SADD', inflight, member)
redis.call('HINCRBY', job, 'dispatched', 1)
if state == 'queued' then redis.call('HSET', job, 'state', 'running', 'started_at', now) end
return {1, attempt, spec}
