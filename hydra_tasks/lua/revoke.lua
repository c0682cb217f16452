-- REVOKE: undo one result of a worker caught cheating (trust/consequences.py), the oldest left in
-- its results log, in one atomic step. Its tokens are reversed by a journal entry with the reason;
-- then, by the state of its job:
--   running or queued: the result is taken out of the job (the done set, its part, the job's and the
--     worker's counters) and the chunk is put first in the job's queue, to be recomputed elsewhere;
--     an adaptive Mandelbrot preview is kept (it only guides tiling and is in no output);
--   done: the chunk is flagged suspect in the job (the job's 'suspect' count), for the operator to
--     re-open (reopen.lua); a preview is not flagged (it is in no output); likewise a result inside the
--     work a re-opened compacted job kept (it can no longer be taken out alone);
--   failed, cancelled or deleted: nothing more.
-- uses: _leases, _journal
-- Returns {code, micro-tokens reversed}: code 1 RECOMPUTE, 2 FLAGGED, 0 NOTHING_MORE, -3 STALE
-- (the log's head or the chunk's part changed since the caller read them: nothing changed).
local results_log = KEYS[1]  -- list: the worker's merged results, oldest first (merge.lua)
local job = KEYS[2]          -- hash: state, counters
local done = KEYS[3]         -- set: merged chunk ids
local parts = KEYS[4]        -- hash: chunk id -> merged part JSON
local job_workers = KEYS[5]  -- hash: "{worker}|{field}" -> per-worker work counters
local todo = KEYS[6]         -- list: chunk ids waiting
local lease = KEYS[7]        -- hash: the chunk's lease (re-created, queued, for the recompute)
local suspect = KEYS[8]      -- hash: chunk id -> why it is suspect (JSON), for a finished job
local minted_set = KEYS[9]   -- the ledger: set of mint keys
local balances = KEYS[10]    -- hash: account -> micro-tokens
local earned = KEYS[11]      -- hash: account -> micro-tokens ever earned
local stats = KEYS[12]       -- hash: supply, reversed, reversals
local journal = KEYS[13]     -- stream: the journal
local head = KEYS[14]        -- hash: the journal chain's head
local rank_balance = KEYS[15]  -- zset: account -> balance (the leaderboard)
local rank_earned = KEYS[16]   -- zset: account -> earned
local teams = KEYS[17]         -- hash: account -> its team
local teams_earned = KEYS[18]  -- zset: team -> its members' earned micro-tokens
local entry = ARGV[1]        -- the log's head as the caller read it
local worker = ARGV[2]
local now = ARGV[3]
local reason = ARGV[4]       -- why: the failed check
local part_sha = ARGV[5]     -- SHA-1 of the chunk's part as the caller read it ('' if none)
local units = ARGV[6]        -- the chunk's units
local keep = ARGV[7] == '1'  -- a preview: keep it in the job
local job_id = ARGV[8]
local spec = ARGV[9]         -- the chunk's spec JSON, kept in the suspect flags for a re-open ('' if unknown)
-- ARGV[10..]: (field, increment) pairs the result added to the job hash (the caller recomputes them
-- from the part with the kind's verify, or reads them from the log entry of a compacted job), subtracted here

if redis.call('LINDEX', results_log, 0) ~= entry then return {-3, 0} end
local e = cjson.decode(entry)
local state = redis.call('HGET', job, 'state')
local merged = redis.call('SISMEMBER', done, e.chunk) == 1
-- A compacted job (finish.lua) has no done set: a result in its worker's log that is not in the done set
-- (of a job re-opened since) is inside the work it kept.
local kept = not merged and redis.call('HGET', job, 'compacted') == '1'
if live(state) and merged and not keep then
  local part = redis.call('HGET', parts, e.chunk)
  if not part or redis.sha1hex(part) ~= part_sha then return {-3, 0} end
end

redis.call('LPOP', results_log)
local reversed = '0'
local key = e.job .. ':' .. e.chunk
if e.amount ~= '0' then
  -- The mint key is free again, so the recomputed chunk pays whoever recomputes it. An entry is revoked
  -- once (it leaves the log here), so its mint stands until now; FINISH may have compacted its key away.
  if redis.call('SREM', minted_set, key) == 0 then redis.call('HINCRBY', stats, 'keys_compacted', -1) end
  redis.call('ZADD', rank_balance, redis.call('HINCRBY', balances, e.account, '-' .. e.amount), e.account)
  redis.call('ZADD', rank_earned, redis.call('HINCRBY', earned, e.account, '-' .. e.amount), e.account)
  local team = redis.call('HGET', teams, e.account)
  if team then redis.call('ZINCRBY', teams_earned, '-' .. e.amount, team) end
  redis.call('HINCRBY', stats, 'supply', '-' .. e.amount)
  redis.call('HINCRBY', stats, 'reversed', e.amount)
  redis.call('HINCRBY', stats, 'reversals', 1)
  append_entry(journal, head, {'type', 'reversal', 'from', e.account, 'amount', e.amount, 'key', key,
                               'reason', reason, 'ts', now, 'detail', worker})
  reversed = e.amount
end
if not state or not (merged or kept) then return {0, reversed} end
if not keep and ((state == 'done') or (live(state) and kept)) then
  local flags = {worker = worker, units = tonumber(units), keep = keep, increments = {}, spec = spec}
  for i = 10, #ARGV, 2 do flags.increments[ARGV[i]] = ARGV[i + 1] end  -- decimal strings
  redis.call('HSET', suspect, e.chunk, cjson.encode(flags))
  redis.call('HSET', job, 'suspect', redis.call('HLEN', suspect))
  return {2, reversed}
end
if not live(state) or keep or not merged then return {0, reversed} end
redis.call('SREM', done, e.chunk)
redis.call('HDEL', parts, e.chunk)
redis.call('HINCRBY', job, 'chunks_done', -1)
for i = 10, #ARGV, 2 do
  if ARGV[i + 1] ~= '0' then redis.call('HINCRBY', job, ARGV[i], '-' .. ARGV[i + 1]) end
end
redis.call('HINCRBY', job_workers, worker .. '|chunks', -1)
if units ~= '0' then redis.call('HINCRBY', job_workers, worker .. '|units', '-' .. units) end
redis.call('HINCRBY', job, 'recomputed', 1)
redis.call('HSET', lease, 'queued', '1')
redis.call('LPUSH', todo, e.chunk)
redis.call('HINCRBY', job, 'redispatched', 1)
redis.call('HSET', job, 'updated_at', now)
return {1, reversed}
