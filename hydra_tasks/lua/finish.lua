-- FINISH: move a live job to a final state once, release every lease it still has, and compact its
-- working state (chunk specs, parts, done set, audits, queues, leases; the chunk log expires later).
-- uses: _leases
--
-- The caller read the job's leases (with their holders), its re-queued chunks that keep a lease
-- hash, and its dispatched and redispatched counters, and passes their keys. If any of that changed
-- meanwhile (a chunk granted, re-queued or backed up), nothing changes and the script returns -3
-- (STALE). Every chunk enters todo by creation or a re-queue (which counts in redispatched) and
-- leaves it by a grant (which counts in dispatched), so unchanged counters mean the same todo list.
-- A caller that computed the job's final result from its merged parts passes the units_done it read
-- (manifest.units_done): if a result was revoked meanwhile (revoke.lua), nothing changes (-4 CHANGED).
-- A finalizer also passes its result's blobs (the image, the counts), written beforehand under
-- staging keys: they replace the job's blobs only if this call ends the job, in the same atomic
-- step, and are deleted otherwise, so a finalizer that lost a race never overwrites the result;
-- and the keys the blobs replace (the per-tile parts), deleted in the same step.
-- Returns 1 (this call ended the job), 0 (the job was already over), -3, -4 or -5 (a staged blob
-- expired before this call: nothing changes, finalize again).
local job = KEYS[1]          -- hash: state, dispatched, redispatched, finished_at, and the given fields
local active = KEYS[2]       -- zset: the active jobs
local todo = KEYS[3]         -- list: chunk ids waiting
local leases = KEYS[4]       -- zset: "{job}:{chunk}" -> lease deadline
local tiles = KEYS[5]        -- zset: adaptive tiles waiting
local job_leases = KEYS[6]   -- zset: the job's leases (chunk id -> deadline)
local totals = KEYS[7]       -- hash: finished jobs per final state, and their counters summed (manifest.totals)
-- The job's working state, compacted when it ends (a late result is refused by the job's final state):
local chunks = KEYS[8]       -- hash: chunk id -> spec (deleted)
local done = KEYS[9]         -- set: merged chunk ids (deleted, after its mint keys leave the minted set)
local parts = KEYS[10]       -- hash: chunk id -> part (deleted: the result is computed)
local job_log = KEYS[11]     -- list: the chunk log (kept for detail_s more, for the charts)
local job_audits = KEYS[12]  -- hash: the job's audit chunks (deleted, and their entries in the audits zset)
local audits = KEYS[13]      -- zset: audit chunks waiting, of every job
local minted = KEYS[14]      -- set: the ledger's mint idempotency keys
local ledger_stats = KEYS[15]  -- hash: keys_compacted counts the mint keys removed here
local finished = KEYS[16]    -- zset: finished job id -> finished_at (jobs/retention.py prunes from it)
-- KEYS[17..]: the lease hash of each waiting chunk that has one, then for each leased chunk its
-- lease hash followed by its holder's and backup's in-flight sets (those that exist), then for
-- each blob (manifest.blobs of them) its staging key followed by the job's key for it, then the
-- keys to delete when this call ends the job (manifest.drop of them)
local new_state = ARGV[1]
local now = ARGV[2]
local fields = cjson.decode(ARGV[3])    -- {field: text} to set on the job hash
local job_id = ARGV[4]
-- {dispatched = n, redispatched = n (as read, text), waiting = {chunk, ...},
--  leased = {{chunk, holder, backup}, ...}, units_done = text or nil, blobs = n or nil, drop = n or nil,
--  totals = {counter field, ...}: the job's counters to add to the totals,
--  zeroes = {counter field, ...}: counters removed from the finished job's hash where they are 0}
local manifest = cjson.decode(ARGV[5])
local detail_s = tonumber(ARGV[6])  -- how long the chunk log outlives the job (0: not at all)
local drops = tonumber(manifest.drop or 0)
local last_blob = #KEYS - drops
local first_blob = last_blob - 2 * tonumber(manifest.blobs or 0) + 1

local function drop_staged()
  for i = first_blob, last_blob, 2 do redis.call('DEL', KEYS[i]) end
end

if not live(redis.call('HGET', job, 'state')) then drop_staged(); return 0 end
if manifest.units_done and (redis.call('HGET', job, 'units_done') or '0') ~= manifest.units_done then
  drop_staged(); return -4
end
if (redis.call('HGET', job, 'dispatched') or '0') ~= manifest.dispatched
   or (redis.call('HGET', job, 'redispatched') or '0') ~= manifest.redispatched then return -3 end
local prefix = job_id .. ':'
if redis.call('ZCARD', job_leases) ~= #manifest.leased then return -3 end
local first_leased = 17 + #manifest.waiting
local k = first_leased
for _, entry in ipairs(manifest.leased) do
  if not redis.call('ZSCORE', job_leases, entry[1]) or not holders_are(KEYS[k], entry[2], entry[3]) then
    return -3
  end
  k = k + 1 + (entry[2] ~= '' and 1 or 0) + (entry[3] ~= '' and 1 or 0)
end

for i = first_blob, last_blob, 2 do
  if redis.call('EXISTS', KEYS[i]) == 0 then return -5 end  -- a staged blob vanished (expired): compute again
end
redis.call('HSET', job, 'state', new_state, 'finished_at', now, 'updated_at', now)
for i = first_blob, last_blob, 2 do
  redis.call('RENAME', KEYS[i], KEYS[i + 1])
  redis.call('PERSIST', KEYS[i + 1])
end
for i = last_blob + 1, #KEYS do redis.call('DEL', KEYS[i]) end
for name, value in pairs(fields) do redis.call('HSET', job, name, value) end
redis.call('ZREM', active, job_id)
redis.call('HINCRBY', totals, new_state, 1)
for _, name in ipairs(manifest.totals or {}) do
  local value = redis.call('HGET', job, name)
  if value and value ~= '0' then redis.call('HINCRBY', totals, name, value) end
end
for i = 17, first_leased - 1 do redis.call('DEL', KEYS[i]) end  -- re-queued chunks keep a lease hash
redis.call('DEL', todo, tiles, job_leases)
k = first_leased
for _, entry in ipairs(manifest.leased) do
  local lease, member = KEYS[k], prefix .. entry[1]
  local holder_key, backup_key = inflight_keys(k + 1, entry[2], entry[3])
  redis.call('ZREM', leases, member)
  release(lease, member, holder_key, backup_key)
  redis.call('DEL', lease)
  k = k + 1 + (entry[2] ~= '' and 1 or 0) + (entry[3] ~= '' and 1 or 0)
end
-- Compact: a finished job keeps its hash (result, counters), its per-worker summary and its result blobs.
-- MERGE refuses any result for it from now on, so its mint keys are no longer what stops a second mint.
local compacted = 0
for _, chunk_id in ipairs(redis.call('SMEMBERS', done)) do
  compacted = compacted + redis.call('SREM', minted, prefix .. chunk_id)
end
if compacted > 0 then redis.call('HINCRBY', ledger_stats, 'keys_compacted', compacted) end
for _, audit_id in ipairs(redis.call('HKEYS', job_audits)) do redis.call('ZREM', audits, prefix .. audit_id) end
redis.call('DEL', chunks, done, parts, job_audits)
if detail_s > 0 then redis.call('EXPIRE', job_log, math.ceil(detail_s)) else redis.call('DEL', job_log) end
for _, name in ipairs(manifest.zeroes or {}) do  -- counters that stayed 0 read as 0 when absent
  if redis.call('HGET', job, name) == '0' then redis.call('HDEL', job, name) end
end
redis.call('HSET', job, 'compacted', '1')
redis.call('ZADD', finished, now, job_id)
return 1
