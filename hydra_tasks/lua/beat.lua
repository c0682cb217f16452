-- BEAT: a known worker's heartbeat. It never brings back a worker that went offline since the
-- intake read its record (a goodbye, or the sweeper, applied meanwhile by another intake process):
-- an offline worker comes back only by registering again (intake._register_or_beat).
-- Returns 1 BEAT, 0 OFFLINE (nothing written).
local worker = KEYS[1]      -- hash: the worker's record
local now = ARGV[1]
local state = ARGV[2]       -- online or paused
local pause_reason = ARGV[3]

local current = redis.call('HGET', worker, 'state')
if current == false or current == 'offline' then return 0 end
redis.call('HSET', worker, 'last_seen', now, 'state', state, 'pause_reason', pause_reason)
return 1
