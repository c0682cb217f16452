"""Every Lua script Hydra runs in Redis, in one place.

Each script is one atomic step of a chunk's life: *grant* a lease, *merge* a result
exactly once, *requeue* a chunk whose lease expired (or whose result was rejected), and
*release* all of a job's leases when it ends. Key prefixes come from :mod:`keys` as
arguments so the schema stays in one module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from . import keys

GRANT = """
-- KEYS: todo, leases, job, region_inflight
-- ARGV: deadline, lease_key_prefix, job_id, region, queue, now, capacity
local state = redis.call('HGET', KEYS[3], 'state')
if state ~= 'queued' and state ~= 'running' then return {-1} end
if redis.call('SCARD', KEYS[4]) >= tonumber(ARGV[7]) then return {0} end
local chunk = redis.call('LPOP', KEYS[1])
if not chunk then return {-1} end
local member = ARGV[3] .. ':' .. chunk
local lk = ARGV[2] .. member
redis.call('ZADD', KEYS[2], ARGV[1], member)
local attempt = redis.call('HINCRBY', lk, 'attempt', 1)
redis.call('HSET', lk, 'region', ARGV[4], 'queue', ARGV[5], 'dispatched_at', ARGV[6], 'queued', '0')
redis.call('SADD', KEYS[4], member)
redis.call('HINCRBY', KEYS[3], 'dispatched', 1)
if state == 'queued' then redis.call('HSET', KEYS[3], 'state', 'running', 'started_at', ARGV[6]) end
return {1, chunk, attempt}
"""

MERGE = """
-- KEYS: job, done, parts, job_workers, todo, leases, worker
-- ARGV: chunk_id, part_json, worker_id, lease_member, lease_key, region_prefix, region_suffix,
--       now, elapsed_ms, units, then (field, increment) pairs for the job hash
local state = redis.call('HGET', KEYS[1], 'state')
local total = tonumber(redis.call('HGET', KEYS[1], 'chunks_total'))
if state ~= 'queued' and state ~= 'running' then return {-1, 0, total or 0} end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then
  redis.call('HINCRBY', KEYS[1], 'duplicates', 1)
  return {0, tonumber(redis.call('HGET', KEYS[1], 'chunks_done')), total}
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
local done = redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
for i = 11, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[8])
redis.call('HINCRBY', KEYS[4], ARGV[3] .. '|chunks', 1)
redis.call('HINCRBY', KEYS[4], ARGV[3] .. '|units', ARGV[10])
redis.call('HINCRBY', KEYS[4], ARGV[3] .. '|elapsed_ms', ARGV[9])
redis.call('HINCRBY', KEYS[7], 'chunks_done', 1)
redis.call('HINCRBY', KEYS[7], 'busy_ms', ARGV[9])
if redis.call('HGET', ARGV[5], 'queued') == '1' then redis.call('LREM', KEYS[5], 0, ARGV[1]) end
redis.call('ZREM', KEYS[6], ARGV[4])
local region = redis.call('HGET', ARGV[5], 'region')
if region then redis.call('SREM', ARGV[6] .. region .. ARGV[7], ARGV[4]) end
redis.call('DEL', ARGV[5])
return {1, done, total}
"""

REQUEUE = """
-- KEYS: leases, todo, job, done
-- ARGV: lease_member, lease_key, region_prefix, region_suffix, chunk_id, now, counter ('expiries'|'failures'|'rejections'), force
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if ARGV[8] ~= '1' and (not score or tonumber(score) > tonumber(ARGV[6])) then return -1 end
if score then redis.call('ZREM', KEYS[1], ARGV[1]) end
local region = redis.call('HGET', ARGV[2], 'region')
if region then redis.call('SREM', ARGV[3] .. region .. ARGV[4], ARGV[1]) end
local state = redis.call('HGET', KEYS[3], 'state')
if redis.call('SISMEMBER', KEYS[4], ARGV[5]) == 1 or (state ~= 'queued' and state ~= 'running') then
  redis.call('DEL', ARGV[2])
  return -2
end
local n = redis.call('HINCRBY', ARGV[2], ARGV[7], 1)
if redis.call('HGET', ARGV[2], 'queued') ~= '1' then
  redis.call('HSET', ARGV[2], 'queued', '1')
  redis.call('LPUSH', KEYS[2], ARGV[5])
  redis.call('HINCRBY', KEYS[3], 'redispatched', 1)
end
redis.call('HINCRBY', KEYS[3], ARGV[7], 1)
return n
"""

FINISH = """
-- KEYS: job, jobs_active, todo, leases
-- ARGV: new_state, now, field/value pairs..., then '--', lease_key_prefix, region_prefix, region_suffix, job_id
-- Moves a live job to a final state once; releases all its leases. Returns 1 if it changed the job.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'finished_at', ARGV[2], 'updated_at', ARGV[2])
local i = 3
while ARGV[i] ~= '--' do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local lease_prefix, region_prefix, region_suffix, job_id = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
redis.call('ZREM', KEYS[2], job_id)
redis.call('DEL', KEYS[3])
local prefix = job_id .. ':'
for _, m in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  if string.sub(m, 1, #prefix) == prefix then
    redis.call('ZREM', KEYS[4], m)
    local region = redis.call('HGET', lease_prefix .. m, 'region')
    if region then redis.call('SREM', region_prefix .. region .. region_suffix, m) end
    redis.call('DEL', lease_prefix .. m)
  end
end
return 1
"""

LEASE_PREFIX = keys.lease("", "")[: -len(":")]  # "hydra:lease:" (lease(job, chunk) == prefix + "job:chunk")
REGION_PREFIX, REGION_SUFFIX = keys.region_inflight("\0").split("\0")


@dataclass
class Scripts:
    """The scripts registered on one Redis client (EVALSHA with automatic reload)."""

    client: redis.Redis

    def __post_init__(self) -> None:
        self._grant = self.client.register_script(GRANT)
        self._merge = self.client.register_script(MERGE)
        self._requeue = self.client.register_script(REQUEUE)
        self._finish = self.client.register_script(FINISH)

    def grant(self, job_id: str, region: str, queue: str, *, capacity: int, deadline: float,
              now: float) -> tuple[int, str | None, int]:
        """Lease the job's next chunk to ``region``. Returns (1, chunk, attempt), (0, ...) if the
        region is full, or (-1, ...) if the job has nothing to hand out."""
        res = self._grant(keys=[keys.job_todo(job_id), keys.LEASES, keys.job(job_id), keys.region_inflight(region)],
                          args=[repr(deadline), LEASE_PREFIX, job_id, region, queue, repr(now), capacity])
        if int(res[0]) != 1:
            return int(res[0]), None, 0
        return 1, _text(res[1]), int(res[2])

    def merge(self, job_id: str, chunk_id: str, worker_id: str, part_json: str, *, now: float, elapsed_ms: int,
              units: int, increments: dict[str, int]) -> tuple[int, int, int]:
        """Merge once. Returns (code, chunks_done, chunks_total): code 1 merged, 0 duplicate, -1 job not live."""
        member = keys.lease_member(job_id, chunk_id)
        flat: list[Any] = [x for pair in sorted(increments.items()) for x in pair]
        res = self._merge(
            keys=[keys.job(job_id), keys.job_done(job_id), keys.job_parts(job_id), keys.job_workers(job_id),
                  keys.job_todo(job_id), keys.LEASES, keys.worker(worker_id)],
            args=[chunk_id, part_json, worker_id, member, keys.lease(job_id, chunk_id), REGION_PREFIX,
                  REGION_SUFFIX, repr(now), elapsed_ms, units, *flat],
        )
        return int(res[0]), int(res[1] or 0), int(res[2] or 0)

    def requeue(self, job_id: str, chunk_id: str, *, now: float, counter: str, force: bool) -> int:
        """Take a chunk back from its lease and put it first in the job's queue.

        Without ``force`` only an expired lease is taken back. Returns the new value of
        ``counter`` on the lease, or -1 (not expired) / -2 (already merged or job over)."""
        return int(self._requeue(
            keys=[keys.LEASES, keys.job_todo(job_id), keys.job(job_id), keys.job_done(job_id)],
            args=[keys.lease_member(job_id, chunk_id), keys.lease(job_id, chunk_id), REGION_PREFIX, REGION_SUFFIX,
                  chunk_id, repr(now), counter, "1" if force else "0"],
        ))

    def finish(self, job_id: str, state: str, *, now: float, fields: dict[str, str]) -> bool:
        """Move a live job to a final state exactly once and release its leases."""
        flat = [x for pair in fields.items() for x in pair]
        return bool(self._finish(
            keys=[keys.job(job_id), keys.JOBS_ACTIVE, keys.job_todo(job_id), keys.LEASES],
            args=[state, repr(now), *flat, "--", LEASE_PREFIX, REGION_PREFIX, REGION_SUFFIX, job_id],
        ))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

