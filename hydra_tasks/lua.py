"""Every Lua script Hydra runs in Redis, in one place.

Each script is one atomic step of a chunk's life: *grant* a lease to one worker (cutting a new
range for lazily planned kinds), *merge* a result exactly once, *requeue* a chunk whose lease
expired (or whose result was rejected), and *finish* a job, releasing all its leases. Key prefixes come from :mod:`keys` as
arguments so the schema stays in one module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from . import keys

# Release a lease's slots in the in-flight sets of its worker and of its backup worker, if any.
_RELEASE = """
local function release(lease_key, member, worker_prefix, worker_suffix)
  for _, field in ipairs({'worker', 'backup'}) do
    local w = redis.call('HGET', lease_key, field)
    if w then redis.call('SREM', worker_prefix .. w .. worker_suffix, member) end
  end
  redis.call('HDEL', lease_key, 'backup')
end
"""

GRANT = _RELEASE + """
-- KEYS: todo, leases, job, worker_inflight, chunks, tiles
-- ARGV: deadline, lease_key_prefix, job_id, worker_id, region, now, capacity, cut_size, spec_prefix, pick,
--       worker_prefix, worker_suffix
-- Leases the job's next chunk to one worker: a re-queued chunk first; then the heaviest
-- (pick = "max") or lightest ("min") waiting tile; else, for kinds cut lazily (cut_size > 0),
-- a new range [cursor, cursor + cut_size) of the job's units.
local state = redis.call('HGET', KEYS[3], 'state')
if state ~= 'queued' and state ~= 'running' then return {-1} end
if redis.call('SCARD', KEYS[4]) >= tonumber(ARGV[7]) then return {0} end
local chunk = redis.call('LPOP', KEYS[1])
local spec = false
if not chunk and ARGV[10] ~= '' then
  local popped = redis.call(ARGV[10] == 'max' and 'ZPOPMAX' or 'ZPOPMIN', KEYS[6])
  if popped[1] then chunk = popped[1] end
end
if not chunk and tonumber(ARGV[8]) > 0 then
  local total = tonumber(redis.call('HGET', KEYS[3], 'units_total'))
  local cursor = tonumber(redis.call('HGET', KEYS[3], 'cursor') or '0')
  if cursor < total then
    local count = math.min(tonumber(ARGV[8]), total - cursor)
    redis.call('HSET', KEYS[3], 'cursor', string.format('%d', cursor + count))
    chunk = string.format('c%06d', redis.call('HINCRBY', KEYS[3], 'chunks_total', 1) - 1)
    spec = ARGV[9] .. '"start":' .. string.format('%d', cursor) .. ',"count":' .. string.format('%d', count) ..
           '},"units":' .. string.format('%d', count) .. ',"chunk_id":"' .. chunk .. '"}'
    redis.call('HSET', KEYS[5], chunk, spec)
  end
end
if not chunk then return {-1} end
if not spec then spec = redis.call('HGET', KEYS[5], chunk) end
local member = ARGV[3] .. ':' .. chunk
local lk = ARGV[2] .. member
redis.call('ZADD', KEYS[2], ARGV[1], member)
release(lk, member, ARGV[11], ARGV[12])  -- a chunk is never held twice: drop any earlier holder
local attempt = redis.call('HINCRBY', lk, 'attempt', 1)
redis.call('HSET', lk, 'worker', ARGV[4], 'region', ARGV[5], 'dispatched_at', ARGV[6], 'queued', '0',
           'leased:' .. ARGV[4], '1')  -- every worker ever sent this chunk may return it
redis.call('SADD', KEYS[4], member)
redis.call('HINCRBY', KEYS[3], 'dispatched', 1)
if state == 'queued' then redis.call('HSET', KEYS[3], 'state', 'running', 'started_at', ARGV[6]) end
return {1, chunk, attempt, spec}
"""

BACKUP = """
-- KEYS: leases, backup_worker_inflight, job, chunks
-- ARGV: lease_key, member, backup_worker, capacity, chunk_id
-- Gives a leased chunk a second copy on another worker, once. Returns the chunk spec or false.
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return false end
if redis.call('HEXISTS', ARGV[1], 'backup') == 1 then return false end
if redis.call('HGET', ARGV[1], 'worker') == ARGV[3] then return false end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[4]) then return false end
redis.call('HSET', ARGV[1], 'backup', ARGV[3], 'leased:' .. ARGV[3], '1')
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('HINCRBY', KEYS[3], 'backups', 1)
return redis.call('HGET', KEYS[4], ARGV[5])
"""



REQUEUE = _RELEASE + """
-- KEYS: leases, todo, job, done
-- ARGV: lease_member, lease_key, worker_prefix, worker_suffix, chunk_id, now, counter, force, reporter
-- Takes a chunk back from its lease and puts it first in the job's queue. Without force only an
-- expired lease; with force (a failure, rejection or decline) only a live lease, and only when
-- reported by the worker or backup that holds it. Returns {n, worker}: n is the new value of
-- the lease's counter, or -1 (nothing to take back) / -2 (merged or job over).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return {-1, false} end
if ARGV[8] ~= '1' and tonumber(score) > tonumber(ARGV[6]) then return {-1, false} end
if ARGV[8] == '1' and redis.call('HGET', ARGV[2], 'worker') ~= ARGV[9]
   and redis.call('HGET', ARGV[2], 'backup') ~= ARGV[9] then return {-1, false} end
redis.call('ZREM', KEYS[1], ARGV[1])
local worker = redis.call('HGET', ARGV[2], 'worker')
release(ARGV[2], ARGV[1], ARGV[3], ARGV[4])
local state = redis.call('HGET', KEYS[3], 'state')
if redis.call('SISMEMBER', KEYS[4], ARGV[5]) == 1 or (state ~= 'queued' and state ~= 'running') then
  redis.call('DEL', ARGV[2])
  return {-2, worker}
end
local n = redis.call('HINCRBY', ARGV[2], ARGV[7], 1)
if redis.call('HGET', ARGV[2], 'queued') ~= '1' then
  redis.call('HSET', ARGV[2], 'queued', '1')
  redis.call('LPUSH', KEYS[2], ARGV[5])
  redis.call('HINCRBY', KEYS[3], 'redispatched', 1)
end
redis.call('HINCRBY', KEYS[3], ARGV[7], 1)
return {n, worker}
"""

FINISH = _RELEASE + """
-- KEYS: job, jobs_active, todo, leases, tiles
-- ARGV: new_state, now, field/value pairs..., then '--', lease_key_prefix, worker_prefix, worker_suffix, job_id
-- Moves a live job to a final state once; releases all its leases. Returns 1 if it changed the job.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'finished_at', ARGV[2], 'updated_at', ARGV[2])
local i = 3
while ARGV[i] ~= '--' do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local lease_prefix, worker_prefix, worker_suffix, job_id = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
redis.call('ZREM', KEYS[2], job_id)
for _, chunk in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do  -- re-queued chunks keep a lease hash
  redis.call('DEL', lease_prefix .. job_id .. ':' .. chunk)
end
redis.call('DEL', KEYS[3], KEYS[5])
local prefix = job_id .. ':'
for _, m in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  if string.sub(m, 1, #prefix) == prefix then
    redis.call('ZREM', KEYS[4], m)
    release(lease_prefix .. m, m, worker_prefix, worker_suffix)
    redis.call('DEL', lease_prefix .. m)
  end
end
return 1
"""

# Every registered worker's record in one round trip (the registry is read twice per chunk).
ALL_WORKERS = """
-- KEYS: the workers set. ARGV: the worker hash prefix. Returns {id, {field, value, ...}, id, ...}.
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. id)
end
return out
"""

# A worker's signed grid report, stored only if newer than the last one (so a replay changes nothing).
GRID_INFO = """
-- KEYS: worker hash. ARGV: public key that verified the signature, zone, share, timestamp
if redis.call('HGET', KEYS[1], 'public_key') ~= ARGV[1] then return -1 end
local last = tonumber(redis.call('HGET', KEYS[1], 'grid_reported_at') or '0')
if tonumber(ARGV[4]) <= last then return 0 end
redis.call('HSET', KEYS[1], 'grid_zone', ARGV[2], 'grid_renewable_share', ARGV[3], 'grid_reported_at', ARGV[4])
return 1
"""

# --- the token ledger (ledger/book.py). Amounts are integer micro-tokens passed as decimal strings and
# kept below 2^53, so Lua's doubles compare them exactly; HINCRBY does the arithmetic in int64.
_MINT_ONE = """
-- k: the ledger keys {accounts, balances, earned, stats, minted, daily, journal}, from KEYS[first..first+6]
local function ledger_keys(first)
  return {accounts = KEYS[first], balances = KEYS[first + 1], earned = KEYS[first + 2], stats = KEYS[first + 3],
          minted = KEYS[first + 4], daily = KEYS[first + 5], journal = KEYS[first + 6]}
end
-- m: {key, account, amount, reason, ts, day, detail}, amounts as strings. Returns 1 minted, 0 already minted.
local function mint_one(k, m)
  if redis.call('SADD', k.minted, m.key) == 0 then return 0 end
  if redis.call('HEXISTS', k.accounts, m.account) == 0 then redis.call('HSET', k.accounts, m.account, m.ts) end
  local amount = tostring(m.amount)
  redis.call('HINCRBY', k.balances, m.account, amount)
  redis.call('HINCRBY', k.earned, m.account, amount)
  redis.call('HINCRBY', k.stats, 'supply', amount)
  redis.call('HINCRBY', k.stats, 'minted', amount)
  redis.call('HINCRBY', k.stats, 'mints', 1)
  redis.call('HINCRBY', k.daily, m.day, amount)
  redis.call('XADD', k.journal, '*', 'type', 'mint', 'to', m.account, 'amount', amount, 'key', m.key,
             'reason', m.reason, 'ts', m.ts, 'detail', m.detail or '')
  return 1
end
"""

MINT = _MINT_ONE + """
-- KEYS: the ledger keys (see ledger_keys). ARGV: the mint as JSON. Returns 1 minted, 0 already minted.
return mint_one(ledger_keys(1), cjson.decode(ARGV[1]))
"""

MERGE = _RELEASE + _MINT_ONE + """
-- KEYS: job, done, parts, job_workers, todo, leases, worker, then the 7 ledger keys (see ledger_keys)
-- ARGV: chunk_id, part_json, worker_id, lease_member, lease_key, worker_prefix, worker_suffix,
--       now, elapsed_ms, units, mint_json ('' for none), then (field, increment) pairs for the job hash
-- Only a worker the chunk was ever sent to (as holder or backup, including one whose lease expired)
-- may return it; the reward is minted to it in the same atomic step: once per accepted chunk.
-- Returns {code, units_done, units_total, minted}: code 1 merged, 0 duplicate, -1 job not live,
-- -2 the chunk was never sent to this worker.
local state = redis.call('HGET', KEYS[1], 'state')
local total = tonumber(redis.call('HGET', KEYS[1], 'units_total') or '0')
if state ~= 'queued' and state ~= 'running' then return {-1, 0, total, 0} end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'duplicates', 1)
  return {0, tonumber(redis.call('HGET', KEYS[1], 'units_done')), total, 0}
end
if redis.call('HEXISTS', ARGV[5], 'leased:' .. ARGV[3]) == 0 then return {-2, 0, total, 0} end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
for i = 12, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
local minted = 0
if ARGV[11] ~= '' then minted = mint_one(ledger_keys(8), cjson.decode(ARGV[11])) end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[8])
redis.call('HINCRBY', KEYS[4], ARGV[3] .. '|chunks', 1)
redis.call('HINCRBY', KEYS[4], ARGV[3] .. '|units', ARGV[10])
redis.call('HINCRBY', KEYS[4], ARGV[3] .. '|elapsed_ms', ARGV[9])
redis.call('HSET', KEYS[4], ARGV[3] .. '|last_ms', string.format('%d', tonumber(ARGV[8]) * 1000))
redis.call('HINCRBY', KEYS[7], 'chunks_done', 1)
redis.call('HINCRBY', KEYS[7], 'busy_ms', ARGV[9])
if redis.call('HGET', ARGV[5], 'queued') == '1' then redis.call('LREM', KEYS[5], 0, ARGV[1]) end
redis.call('ZREM', KEYS[6], ARGV[4])
release(ARGV[5], ARGV[4], ARGV[6], ARGV[7])
redis.call('DEL', ARGV[5])
return {1, tonumber(redis.call('HGET', KEYS[1], 'units_done')), total, minted}
"""

TRANSFER = """
-- KEYS: accounts, balances, nonces, transfers, stats, journal
-- ARGV: from, to, amount, nonce, signature, ts, reason
-- Returns {code, entry id}: 1 done, 2 the same transfer again (already done), -1 unknown sender,
-- -2 unknown recipient, -3 nonce not above the last one, -4 insufficient funds.
local seen = redis.call('HGET', KEYS[4], ARGV[1] .. ':' .. ARGV[4])
if seen then
  local entry = redis.call('XRANGE', KEYS[6], seen, seen)
  if entry[1] then
    local f = entry[1][2]
    for i = 1, #f, 2 do
      if f[i] == 'signature' and f[i + 1] == ARGV[5] then return {2, seen} end
    end
  end
  return {-3, ''}
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return {-1, ''} end
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then return {-2, ''} end
local last = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '-1')
if tonumber(ARGV[4]) <= last then return {-3, ''} end
local balance = redis.call('HGET', KEYS[2], ARGV[1]) or '0'
if tonumber(balance) < tonumber(ARGV[3]) then return {-4, balance} end  -- the stored digits, not %.14g
redis.call('HINCRBY', KEYS[2], ARGV[1], '-' .. ARGV[3])
redis.call('HINCRBY', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
redis.call('HINCRBY', KEYS[5], 'transferred', ARGV[3])
redis.call('HINCRBY', KEYS[5], 'transfers', 1)
local id = redis.call('XADD', KEYS[6], '*', 'type', 'transfer', 'from', ARGV[1], 'to', ARGV[2], 'amount', ARGV[3],
                      'nonce', ARGV[4], 'signature', ARGV[5], 'reason', ARGV[7], 'ts', ARGV[6])
redis.call('HSET', KEYS[4], ARGV[1] .. ':' .. ARGV[4], id)
return {1, id}
"""

LEDGER_KEYS = [keys.LEDGER_ACCOUNTS, keys.LEDGER_BALANCES, keys.LEDGER_EARNED, keys.LEDGER_STATS, keys.LEDGER_MINTED,
               keys.LEDGER_DAILY, keys.LEDGER_JOURNAL]  # the order ledger_keys() expects

LEASE_PREFIX = keys.lease("", "")[: -len(":")]  # "hydra:lease:" (lease(job, chunk) == prefix + "job:chunk")
WORKER_PREFIX, WORKER_SUFFIX = keys.worker_inflight("\0").split("\0")


@dataclass(frozen=True)
class Grant:
    """The outcome of one GRANT: code 1 (leased), 0 (worker full) or -1 (job has nothing to hand out)."""

    code: int
    chunk_id: str | None = None
    attempt: int = 0
    spec_json: str | None = None


@dataclass
class Scripts:
    """The scripts registered on one Redis client (EVALSHA with automatic reload)."""

    client: redis.Redis

    def __post_init__(self) -> None:
        self._grant = self.client.register_script(GRANT)
        self._merge = self.client.register_script(MERGE)
        self._requeue = self.client.register_script(REQUEUE)
        self._finish = self.client.register_script(FINISH)
        self._backup = self.client.register_script(BACKUP)
        self._grid_info = self.client.register_script(GRID_INFO)
        self._all_workers = self.client.register_script(ALL_WORKERS)
        self._mint = self.client.register_script(MINT)
        self._transfer = self.client.register_script(TRANSFER)

    def grant(self, job_id: str, worker_id: str, region: str, *, capacity: int, deadline: float, now: float,
              cut_size: int = 0, spec_prefix: str = "", pick: str = "") -> Grant:
        """Lease the job's next chunk to ``worker_id`` (see GRANT)."""
        res = self._grant(
            keys=[keys.job_todo(job_id), keys.LEASES, keys.job(job_id), keys.worker_inflight(worker_id),
                  keys.job_chunks(job_id), keys.job_tiles(job_id)],
            args=[repr(deadline), LEASE_PREFIX, job_id, worker_id, region, repr(now), capacity, cut_size, spec_prefix,
                  pick, WORKER_PREFIX, WORKER_SUFFIX],
        )
        if int(res[0]) != 1:
            return Grant(int(res[0]))
        return Grant(1, _text(res[1]), int(res[2]), _text(res[3]))

    def merge(self, job_id: str, chunk_id: str, worker_id: str, part_json: str, *, now: float, elapsed_ms: int,
              units: int, increments: dict[str, int], mint_json: str = "") -> tuple[int, int, int, bool]:
        """Merge once, minting ``mint_json`` (the reward) in the same step. Returns (code,
        units_done, units_total, minted): code 1 merged, 0 duplicate, -1 job not live, -2 the chunk
        was never sent to ``worker_id``."""
        member = keys.lease_member(job_id, chunk_id)
        flat: list[Any] = [x for pair in sorted(increments.items()) for x in pair]
        res = self._merge(
            keys=[keys.job(job_id), keys.job_done(job_id), keys.job_parts(job_id), keys.job_workers(job_id),
                  keys.job_todo(job_id), keys.LEASES, keys.worker(worker_id), *LEDGER_KEYS],
            args=[chunk_id, part_json, worker_id, member, keys.lease(job_id, chunk_id), WORKER_PREFIX,
                  WORKER_SUFFIX, repr(now), elapsed_ms, units, mint_json, *flat],
        )
        return int(res[0]), int(res[1] or 0), int(res[2] or 0), bool(int(res[3] or 0))

    def requeue(self, job_id: str, chunk_id: str, *, now: float, counter: str, force: bool,
                reporter: str = "") -> tuple[int, str | None]:
        """Take a chunk back from its lease and put it first in the job's queue.

        Without ``force`` only an expired lease is taken back. Returns (n, worker): n is the new
        value of ``counter`` on the lease, or -1 (not expired) / -2 (already merged or job over);
        worker is who held the lease."""
        res = self._requeue(
            keys=[keys.LEASES, keys.job_todo(job_id), keys.job(job_id), keys.job_done(job_id)],
            args=[keys.lease_member(job_id, chunk_id), keys.lease(job_id, chunk_id), WORKER_PREFIX, WORKER_SUFFIX,
                  chunk_id, repr(now), counter, "1" if force else "0", reporter],
        )
        return int(res[0]), (_text(res[1]) if res[1] else None)

    def backup(self, job_id: str, chunk_id: str, worker_id: str, *, capacity: int) -> str | None:
        """Lease a second copy of an in-flight chunk to ``worker_id``; returns its spec JSON, or None."""
        res = self._backup(
            keys=[keys.LEASES, keys.worker_inflight(worker_id), keys.job(job_id), keys.job_chunks(job_id)],
            args=[keys.lease(job_id, chunk_id), keys.lease_member(job_id, chunk_id), worker_id, capacity, chunk_id],
        )
        return _text(res) if res else None

    def finish(self, job_id: str, state: str, *, now: float, fields: dict[str, str]) -> bool:
        """Move a live job to a final state exactly once and release its leases."""
        flat = [x for pair in fields.items() for x in pair]
        return bool(self._finish(
            keys=[keys.job(job_id), keys.JOBS_ACTIVE, keys.job_todo(job_id), keys.LEASES, keys.job_tiles(job_id)],
            args=[state, repr(now), *flat, "--", LEASE_PREFIX, WORKER_PREFIX, WORKER_SUFFIX, job_id],
        ))


    def all_workers(self) -> dict[str, dict[str, str]]:
        """worker id -> its registry hash, for every registered worker."""
        res = self._all_workers(keys=[keys.WORKERS], args=[keys.worker("")])
        return {_text(res[i]): {_text(res[i + 1][j]): _text(res[i + 1][j + 1]) for j in range(0, len(res[i + 1]), 2)}
                for i in range(0, len(res), 2)}

    def grid_info(self, worker_id: str, public_key: str, zone: str, share: float, timestamp: float) -> int:
        """1 stored; 0 not newer than the stored report (a replay); -1 the worker's key changed meanwhile."""
        return int(self._grid_info(keys=[keys.worker(worker_id)],
                                   args=[public_key, zone, repr(share), repr(timestamp)]))


    def mint(self, mint_json: str) -> int:
        """Mint once per idempotency key (see MINT): 1 minted, 0 already minted."""
        return int(self._mint(keys=LEDGER_KEYS, args=[mint_json]))

    def transfer(self, sender: str, recipient: str, amount: int, nonce: int, signature: str, *, now: float,
                 reason: str) -> tuple[int, str]:
        """Move ``amount`` micro-tokens (see TRANSFER for the codes); returns (code, entry id or detail)."""
        res = self._transfer(keys=[keys.LEDGER_ACCOUNTS, keys.LEDGER_BALANCES, keys.LEDGER_NONCES,
                                   keys.LEDGER_TRANSFERS, keys.LEDGER_STATS, keys.LEDGER_JOURNAL],
                             args=[sender, recipient, str(amount), str(nonce), signature, repr(now), reason])
        return int(res[0]), _text(res[1])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

