-- TRANSFER: move micro-tokens between two accounts, once per (sender, nonce).
-- uses: _journal
-- Returns {code, entry id or detail}: 1 DONE, 2 REPEATED (the very same signed transfer again),
-- -1 UNKNOWN_SENDER, -2 UNKNOWN_RECIPIENT, -3 STALE_NONCE (not above the last one, or reused by a
-- different transfer), -4 OVERDRAFT (detail: the sender's balance).
local accounts = KEYS[1]     -- hash: account -> opened_at
local balances = KEYS[2]     -- hash: account -> micro-tokens
local nonces = KEYS[3]       -- hash: account -> last nonce used
local transfers = KEYS[4]    -- hash: "{from}:{nonce}" -> journal entry id
local stats = KEYS[5]        -- hash: transferred, transfers
local journal = KEYS[6]      -- stream: every balance change (hash-chained, see _journal)
local head = KEYS[7]         -- hash: the journal chain's newest hash, id and length
local rank = KEYS[8]         -- zset: account -> balance (the leaderboard)
local from = ARGV[1]
local to = ARGV[2]
local amount = ARGV[3]       -- micro-tokens, decimal string
local nonce = ARGV[4]
local signature = ARGV[5]
local ts = ARGV[6]
local reason = ARGV[7]

local seen = redis.call('HGET', transfers, from .. ':' .. nonce)
if seen then
  local entry = redis.call('XRANGE', journal, seen, seen)
  if entry[1] then
    local f = entry[1][2]
    for i = 1, #f, 2 do
      if f[i] == 'signature' and f[i + 1] == signature then return {2, seen} end
    end
  end
  return {-3, ''}
end
if redis.call('HEXISTS', accounts, from) == 0 then return {-1, ''} end
if redis.call('HEXISTS', accounts, to) == 0 then return {-2, ''} end
local last = tonumber(redis.call('HGET', nonces, from) or '-1')
if tonumber(nonce) <= last then return {-3, ''} end
local balance = redis.call('HGET', balances, from) or '0'
if tonumber(balance) < tonumber(amount) then return {-4, balance} end  -- the stored digits, not %.14g
redis.call('ZADD', rank, redis.call('HINCRBY', balances, from, '-' .. amount), from)
redis.call('ZADD', rank, redis.call('HINCRBY', balances, to, amount), to)
redis.call('HSET', nonces, from, nonce)
redis.call('HINCRBY', stats, 'transferred', amount)
redis.call('HINCRBY', stats, 'transfers', 1)
local id = append_entry(journal, head, {'type', 'transfer', 'from', from, 'to', to, 'amount', amount,
                                       'nonce', nonce, 'signature', signature, 'reason', reason, 'ts', ts})
redis.call('HSET', transfers, from .. ':' .. nonce, id)
return {1, id}
