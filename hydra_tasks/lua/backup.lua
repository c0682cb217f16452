-- BACKUP: give a leased chunk a second copy on another worker, once.
-- Returns the chunk's spec JSON, or false (not leased, already backed up, same worker, or full).
local leases = KEYS[1]       -- zset: "{job}:{chunk}" -> lease deadline
local inflight = KEYS[2]     -- set: the backup worker's leased chunks
local job = KEYS[3]          -- hash: backups counter
local chunks = KEYS[4]       -- hash: chunk id -> spec JSON
local lease = KEYS[5]        -- hash: the chunk's lease
local member = ARGV[1]
local backup = ARGV[2]
local capacity = tonumber(ARGV[3])
local chunk = ARGV[4]

if not redis.call('ZSCORE', leases, member) then return false end
if redis.call('HEXISTS', lease, 'backup') == 1 then return false end
if redis.call('HGET', lease, 'worker') == backup then return false end
if redis.call('SCARD', inflight) >= capacity then return false end
redis.call('HSET', lease, 'backup', backup, 'leased:' .. backup, '1')
redis.call('SADD', inflight, member)
redis.call('HINCRBY', job, 'backups', 1)
return redis.call('HGET', chunks, chunk)
