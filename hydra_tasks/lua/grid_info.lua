-- GRID_INFO: store a worker's signed grid report, only if newer than the last (a replay changes nothing).
-- Returns 1 STORED, 0 REPLAY (not newer than the stored report), -1 KEY_CHANGED (the worker's key
-- changed since the signature was checked).
local worker = KEYS[1]       -- hash: the worker's record
local generation = KEYS[2]   -- string: the registry's generation (routing reads the report: views go stale)
local public_key = ARGV[1]   -- the key that verified the signature
local zone = ARGV[2]
local share = ARGV[3]
local timestamp = ARGV[4]
local token = ARGV[5]        -- a new generation token

if redis.call('HGET', worker, 'public_key') ~= public_key then return -1 end
local last = tonumber(redis.call('HGET', worker, 'grid_reported_at') or '0')
if tonumber(timestamp) <= last then return 0 end
redis.call('HSET', worker, 'grid_zone', zone, 'grid_renewable_share', share, 'grid_reported_at', timestamp)
redis.call('SET', generation, token)
return 1
