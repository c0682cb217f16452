-- MERGE: accept one chunk's result exactly once, and mint its reward in the same atomic step.
-- uses: _leases, _mint
--
-- Only a worker the chunk was ever sent to (holder or backup, including one whose lease expired)
-- may return it, so a chunk is paid once, to the first of them to return it.
-- Returns {code, units_done, units_total, minted}: code 1 MERGED, 0 DUPLICATE, -1 JOB_OVER,
-- -2 NOT_SENT (the chunk was never sent to this worker), -3 STALE (the lease's holders changed
-- since the caller read them: nothing changed, read again).
local job = KEYS[1]          -- hash: state, units_done, units_total, chunks_done, counters
local done = KEYS[2]         -- set: merged chunk ids (the idempotency set)
local parts = KEYS[3]        -- hash: chunk id -> merged partial result JSON
local job_workers = KEYS[4]  -- hash: "{worker}|{field}" -> per-worker work counters
local todo = KEYS[5]         -- list: chunk ids waiting
local leases = KEYS[6]       -- zset: "{job}:{chunk}" -> lease deadline
local worker_record = KEYS[7]  -- hash: the returning worker's record
local lease = KEYS[8]        -- hash: the chunk's lease
local results_log = KEYS[9]  -- list: the returning worker's merged results, the ones a catch revokes (revoke.lua)
-- KEYS[10..21]: the ledger keys (see _mint's ledger_keys); KEYS[22]: zset, the job's leases (chunk id ->
-- deadline); KEYS[23]: list, the job's chunk log (metrics); KEYS[24..]: the holders' in-flight sets
local job_leases = KEYS[10 + LEDGER_KEY_COUNT]
local job_log = KEYS[11 + LEDGER_KEY_COUNT]
local chunk = ARGV[1]
local part = ARGV[2]
local worker = ARGV[3]
local member = ARGV[4]
local now = ARGV[5]
local elapsed_ms = ARGV[6]
local units = ARGV[7]
local mint = ARGV[8]         -- the reward as JSON, '' for none
local holder = ARGV[9]
local backup = ARGV[10]
local job_id = ARGV[11]
local record_cap = tonumber(ARGV[12])  -- the newest results the worker's record keeps
local log_entry = ARGV[13]   -- the chunk log's entry (JSON), '' for none
local log_cap = tonumber(ARGV[14])  -- the newest entries the chunk log keeps
-- what a catch needs to undo this result once the job's working state is compacted (revoke.lua): the
-- members '"units":..,"inc":{..},"keep":..,"spec":".."' of a JSON object, built by the caller; '' for none
local undo = ARGV[15]
-- the merge's bookkeeping, applied only if the chunk merges (the worker's speed model, the carbon totals,
-- the dashboard's history): {{command, key number, field, value} | {'EXPIREAT', key number, unix s}, ...}
-- on the keys after the in-flight sets (KEYS[first_extra + key number]); '' for none
local deferred = ARGV[16]
-- ARGV[17..]: (field, increment) pairs for the job hash
local holder_key, backup_key = inflight_keys(12 + LEDGER_KEY_COUNT, holder, backup)
local first_extra = 11 + LEDGER_KEY_COUNT + (holder ~= '' and 1 or 0) + (backup ~= '' and 1 or 0)
local BOOKKEEPING = {HSET = true, HINCRBY = true, HINCRBYFLOAT = true, EXPIREAT = true}
local ops = {}
if deferred ~= '' then ops = cjson.decode(deferred) end
for _, op in ipairs(ops) do  -- checked before the first write: Redis does not roll a script back
  local index = first_extra + tonumber(op[2])
  if not BOOKKEEPING[op[1]] or index < first_extra or index > #KEYS then
    return redis.error_reply('MERGE: bookkeeping ' .. tostring(op[1]) .. ' on key ' .. tostring(op[2]) .. ' refused')
  end
end

local state = redis.call('HGET', job, 'state')
local total = tonumber(redis.call('HGET', job, 'units_total') or '0')
if not live(state) then return {-1, 0, total, 0} end
if redis.call('SISMEMBER', done, chunk) == 1 then
  redis.call('HINCRBY', job, 'duplicates', 1)
  return {0, tonumber(redis.call('HGET', job, 'units_done')), total, 0}
end
if redis.call('HEXISTS', lease, 'leased:' .. worker) == 0 then return {-2, 0, total, 0} end
if not holders_are(lease, holder, backup) then return {-3, 0, total, 0} end
redis.call('SADD', done, chunk)
redis.call('HSET', parts, chunk, part)
redis.call('HINCRBY', job, 'chunks_done', 1)
for i = 17, #ARGV, 2 do redis.call('HINCRBY', job, ARGV[i], ARGV[i + 1]) end
local minted, amount, account = 0, '0', ''
if mint ~= '' then
  local m = cjson.decode(mint)
  minted = mint_one(ledger_keys(10), m)
  if minted == 1 then amount, account = tostring(m.amount), m.account end
end
-- What a catch must undo: the job and chunk, and the micro-tokens this merge minted and to whom.
local logged = cjson.encode({job = job_id, chunk = chunk, amount = amount, account = account})
if undo ~= '' then logged = string.sub(logged, 1, -2) .. ',' .. undo .. '}' end
redis.call('RPUSH', results_log, logged)
redis.call('LTRIM', results_log, -record_cap, -1)
redis.call('HSET', job, 'updated_at', now)
if log_entry ~= '' then
  redis.call('RPUSH', job_log, log_entry)
  redis.call('LTRIM', job_log, -log_cap, -1)
end
redis.call('HINCRBY', job_workers, worker .. '|chunks', 1)
redis.call('HINCRBY', job_workers, worker .. '|units', units)
redis.call('HINCRBY', job_workers, worker .. '|elapsed_ms', elapsed_ms)
redis.call('HSET', job_workers, worker .. '|last_ms', string.format('%d', tonumber(now) * 1000))
redis.call('HINCRBY', worker_record, 'chunks_done', 1)
redis.call('HINCRBY', worker_record, 'busy_ms', elapsed_ms)
if redis.call('HGET', lease, 'queued') == '1' then redis.call('LREM', todo, 0, chunk) end
redis.call('ZREM', leases, member)
redis.call('ZREM', job_leases, chunk)
release(lease, member, holder_key, backup_key)
redis.call('DEL', lease)
for _, op in ipairs(ops) do
  local index = first_extra + tonumber(op[2])
  local key = KEYS[index]
  if op[1] == 'EXPIREAT' then redis.call('EXPIREAT', key, op[3])
  elseif op[1] == 'HSET' then redis.call('HSET', key, op[3], op[4])
  elseif op[1] == 'HINCRBY' then redis.call('HINCRBY', key, op[3], op[4])
  else redis.call('HINCRBYFLOAT', key, op[3], op[4]) end
end
return {1, tonumber(redis.call('HGET', job, 'units_done')), total, minted}
