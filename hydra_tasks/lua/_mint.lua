-- Library (prepended to the scripts that say "-- uses: _mint"): minting into the token ledger.
-- uses: _journal
-- Amounts are integer micro-tokens passed as decimal strings and kept below 2^53, so Lua's doubles
-- compare them exactly; HINCRBY does the arithmetic in int64.

-- The ledger keys, LEDGER_KEY_COUNT of them, passed in this order from KEYS[first] on (lua.LEDGER_KEYS).
local LEDGER_KEY_COUNT = 12
local function ledger_keys(first)
  return {accounts = KEYS[first], balances = KEYS[first + 1], earned = KEYS[first + 2], stats = KEYS[first + 3],
          minted = KEYS[first + 4], daily = KEYS[first + 5], journal = KEYS[first + 6], head = KEYS[first + 7],
          rank_balance = KEYS[first + 8], rank_earned = KEYS[first + 9], teams = KEYS[first + 10],
          teams_earned = KEYS[first + 11]}
end

-- Add delta (a decimal string, may be negative) to the account's balance and earned total, and keep
-- the leaderboard's sorted sets (scores = the hashes' exact values, below 2^53) and its team's total
-- in step. earned = false: the balance only (a transfer).
local function credit(k, account, delta, earned)
  redis.call('ZADD', k.rank_balance, redis.call('HINCRBY', k.balances, account, delta), account)
  if earned then
    redis.call('ZADD', k.rank_earned, redis.call('HINCRBY', k.earned, account, delta), account)
    local team = redis.call('HGET', k.teams, account)
    if team then redis.call('ZINCRBY', k.teams_earned, delta, team) end
  end
end

-- m: {key, account, amount, reason, ts, day, detail, result, result_signature}, amounts as strings;
-- a chunk's reward carries the signed report that earned it (result, result_signature).
-- Returns 1 minted, 0 already minted (m.key is the idempotency key, e.g. "{job}:{chunk}").
local function mint_one(k, m)
  if redis.call('SADD', k.minted, m.key) == 0 then return 0 end
  if redis.call('HEXISTS', k.accounts, m.account) == 0 then redis.call('HSET', k.accounts, m.account, m.ts) end
  local amount = tostring(m.amount)
  credit(k, m.account, amount, true)
  redis.call('HINCRBY', k.stats, 'supply', amount)
  redis.call('HINCRBY', k.stats, 'minted', amount)
  redis.call('HINCRBY', k.stats, 'mints', 1)
  redis.call('HINCRBY', k.daily, m.day, amount)
  local entry = {'type', 'mint', 'to', m.account, 'amount', amount, 'key', m.key, 'reason', m.reason, 'ts', m.ts,
                 'detail', m.detail or ''}
  if m.result then
    for _, v in ipairs({'result', m.result, 'result_signature', m.result_signature or ''}) do entry[#entry + 1] = v end
  end
  append_entry(k.journal, k.head, entry)
  return 1
end
