-- MINT: mint once per idempotency key (grants and tests; chunk rewards are minted inside MERGE).
-- uses: _mint
-- KEYS[1..8]: the ledger keys (see ledger_keys). Returns 1 MINTED, 0 ALREADY.
local mint = cjson.decode(ARGV[1])   -- {key, account, amount, reason, ts, day, detail}
return mint_one(ledger_keys(1), mint)
