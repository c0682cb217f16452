-- Library (prepended to the scripts that say "-- uses: _leases"): releasing a lease's slots.
--
-- A lease names its holder ('worker') and at most one backup ('backup'). Their in-flight sets are
-- keys, so the caller reads both names first and passes the two keys (only those that exist) at
-- the end of KEYS, and the names in ARGV. holders_are() checks the read still holds; when it
-- does not, the script changes nothing and returns STALE (-3), and the caller reads again.

-- The in-flight set keys passed from KEYS[first] on: the holder's (if holder ~= '') then the
-- backup's (if backup ~= '').
local function inflight_keys(first, holder, backup)
  local holder_key, backup_key = false, false
  if holder ~= '' then holder_key = KEYS[first]; first = first + 1 end
  if backup ~= '' then backup_key = KEYS[first] end
  return holder_key, backup_key
end

-- Whether the lease hash still names exactly this holder and backup ('' = none).
local function holders_are(lease, holder, backup)
  return (redis.call('HGET', lease, 'worker') or '') == holder and (redis.call('HGET', lease, 'backup') or '') == backup
end

-- Free the lease's slot in its holder's and its backup's in-flight sets; forget the backup.
local function release(lease, member, holder_key, backup_key)
  if holder_key then redis.call('SREM', holder_key, member) end
  if backup_key then redis.call('SREM', backup_key, member) end
  redis.call('HDEL', lease, 'backup')
end

local function live(state)
  return state == 'queued' or state == 'running'
end
