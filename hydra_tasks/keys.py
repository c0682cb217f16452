"""The Redis key schema, in one place.

Every key Hydra writes is built here, so ``grep keys.`` finds every reader and writer.

=============================  ======  ============================================================
key                            type    contents
=============================  ======  ============================================================
hydra:jobs                     zset    job id -> created_at (all jobs, newest last)
hydra:jobs:active              zset    job id -> dispatch order (priority, then deadline or age)
hydra:jobs:deadlines           zset    job id -> deadline (jobs that may be time-shifted)
hydra:job:{id}                 hash    spec, kind, state, counters, result (see jobs/store.py)
hydra:job:{id}:chunks          hash    chunk id -> chunk spec JSON
hydra:job:{id}:todo            list    chunk ids waiting for dispatch (LPUSH = retry first)
hydra:job:{id}:tiles           zset    adaptive Mandelbrot tiles waiting, by estimated cost
hydra:job:{id}:done            set     chunk ids merged (the idempotency set)
hydra:job:{id}:parts           hash    chunk id -> merged partial result JSON
hydra:job:{id}:workers         hash    "{worker}|{field}" -> per-worker work counters
hydra:job:{id}:image           string  base64 PNG of a finished Mandelbrot job
hydra:job:{id}:counts          string  base64 zlib uint32 iteration counts of a finished Mandelbrot job
hydra:job:{id}:log             list    recent accepted chunks (worker, units, elapsed) for metrics
hydra:leases                   zset    "{job}:{chunk}" -> lease deadline (unix seconds)
hydra:lease:{job}:{chunk}      hash    worker, region, attempt, dispatched_at, queued, expiries ...
hydra:workers                  set     worker ids ever registered
hydra:grid:failures            list    recent carbon-provider failures, newest first (JSON), capped
hydra:sustainability           hash    energy and carbon totals over all jobs (grid/accounting.py)
hydra:worker:{id}              hash    region, host, cores, speeds, state, last_seen, performance model
hydra:worker:{id}:inflight     set     "{job}:{chunk}" currently leased to the worker
hydra:ledger:accounts          hash    account (Ed25519 public key, hex) -> opened_at
hydra:ledger:balances          hash    account -> balance in micro-tokens (integer)
hydra:ledger:earned            hash    account -> micro-tokens ever minted to it
hydra:ledger:nonces            hash    account -> last transfer nonce used
hydra:ledger:transfers         hash    "{from}:{nonce}" -> journal entry id (idempotent retries)
hydra:ledger:minted            set     mint idempotency keys ("{job}:{chunk}")
hydra:ledger:stats             hash    supply, minted, transferred, transfers, mints (integers)
hydra:ledger:daily             hash    "YYYY-MM-DD" (UTC) -> micro-tokens minted that day
hydra:ledger:journal           stream  every balance change, append-only (ledger/book.py)
=============================  ======  ============================================================
"""

from __future__ import annotations

PREFIX = "hydra"

JOBS = f"{PREFIX}:jobs"
JOBS_ACTIVE = f"{PREFIX}:jobs:active"
JOBS_DEADLINES = f"{PREFIX}:jobs:deadlines"
LEASES = f"{PREFIX}:leases"
WORKERS = f"{PREFIX}:workers"
GRID_FAILURES = f"{PREFIX}:grid:failures"
GRID_FAILURES_KEPT = 100
SUSTAINABILITY = f"{PREFIX}:sustainability"  # hash: energy_j, carbon_g, counterfactual_g, renewable_kwh

LEDGER_ACCOUNTS = f"{PREFIX}:ledger:accounts"
LEDGER_BALANCES = f"{PREFIX}:ledger:balances"
LEDGER_EARNED = f"{PREFIX}:ledger:earned"
LEDGER_NONCES = f"{PREFIX}:ledger:nonces"
LEDGER_TRANSFERS = f"{PREFIX}:ledger:transfers"
LEDGER_MINTED = f"{PREFIX}:ledger:minted"
LEDGER_STATS = f"{PREFIX}:ledger:stats"
LEDGER_DAILY = f"{PREFIX}:ledger:daily"
LEDGER_JOURNAL = f"{PREFIX}:ledger:journal"

CONTROL_QUEUE = "hydra.control"
REGION_QUEUE_PREFIX = "hydra.region."


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def job_chunks(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:chunks"


def job_todo(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:todo"


def job_tiles(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:tiles"


def job_done(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:done"


def job_parts(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:parts"


def job_workers(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:workers"


def job_image(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:image"


def job_counts(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:counts"


def job_log(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:log"


def job_keys(job_id: str) -> list[str]:
    """Every key that belongs to one job (for deletion and tests)."""
    return [
        job(job_id), job_chunks(job_id), job_todo(job_id), job_tiles(job_id), job_done(job_id), job_parts(job_id),
        job_workers(job_id), job_image(job_id), job_counts(job_id), job_log(job_id),
    ]


def lease_member(job_id: str, chunk_id: str) -> str:
    return f"{job_id}:{chunk_id}"


def split_lease_member(member: str) -> tuple[str, str]:
    job_id, _, chunk_id = member.partition(":")
    return job_id, chunk_id


def lease(job_id: str, chunk_id: str) -> str:
    return f"{PREFIX}:lease:{job_id}:{chunk_id}"


def worker_inflight(worker_id: str) -> str:
    return f"{PREFIX}:worker:{worker_id}:inflight"


def worker(worker_id: str) -> str:
    return f"{PREFIX}:worker:{worker_id}"


def region_queue(region: str) -> str:
    return f"{REGION_QUEUE_PREFIX}{region}"


def region_of_queue(queue: str) -> str | None:
    return queue[len(REGION_QUEUE_PREFIX):] if queue.startswith(REGION_QUEUE_PREFIX) else None
