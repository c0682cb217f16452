-- BIND_KEY: a volunteer's first signed registration binds its Ed25519 key, once (trust/volunteers.py).
--
-- The join secret is one-time: only its SHA-256 is stored, and binding clears it. Re-registering
-- with the key already bound is accepted (idempotent) without a secret.
-- Returns 1 bound now, 2 already bound to this key, -1 no such volunteer, -2 revoked,
-- -3 bound to another key, -4 wrong or used join secret, -5 the key is bound to another volunteer.
local volunteer = KEYS[1]    -- hash: hydra:volunteer:{name}
local by_key = KEYS[2]       -- hash: public key -> volunteer name
local name = ARGV[1]
local secret_sha256 = ARGV[2]
local public_key = ARGV[3]
local now = ARGV[4]

local state = redis.call('HGET', volunteer, 'state')
if not state then return -1 end
if state == 'revoked' then return -2 end
if state == 'active' then
  if redis.call('HGET', volunteer, 'public_key') == public_key then return 2 end
  return -3
end
local stored = redis.call('HGET', volunteer, 'secret_sha256')
if not stored or stored == '' or stored ~= secret_sha256 then return -4 end
local owner = redis.call('HGET', by_key, public_key)
if owner and owner ~= name then return -5 end
redis.call('HSET', volunteer, 'state', 'active', 'public_key', public_key, 'joined_at', now, 'secret_sha256', '')
redis.call('HSET', by_key, public_key, name)
return 1
