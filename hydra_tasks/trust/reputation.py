"""Reputation and quarantine (issue 12, items 2 and 3, first part): how hard each worker's results
are audited, and what happens to a worker caught by a spot check.

* **Reputation** is the number of spot checks a worker passed since it was last caught
  (``audits_passed`` in its record; a failure sets it back to 0). Every result is spot-checked
  (never zero), but how much of it depends on the reputation (:func:`picks`): a new or recently
  caught worker has 8 of 64 π blocks (or 16 Mandelbrot pixels besides one row) recomputed, a worker
  with 20 clean audits 4, one with 200 or more 2. So a cheater that fabricates even one block in
  64 is caught within a few dozen results, while honest veterans cost about 3% of their work.
* **Quarantine**: a worker whose result fails a spot check gets no more work until an operator
  lifts it (``hydra quarantine lift WORKER``): the scheduler's snapshot leaves it out and GRANT
  refuses it, even if it re-registers; its other chunks are taken back at once.
"""

from __future__ import annotations

import time

import redis

from .. import keys
from ..models import JobKind

#: (reputation at least, π blocks of 64 to recompute, Mandelbrot pixels besides one row), from the top.
POLICY = ((200, 2, 4), (20, 4, 8), (0, 8, 16))


def picks(kind: JobKind, reputation: int) -> int:
    """How many parts of a result from a worker with ``reputation`` clean audits to recompute."""
    for at_least, pi_blocks, pixels in POLICY:
        if reputation >= at_least:
            return pi_blocks if kind is JobKind.PI else pixels
    raise AssertionError("POLICY ends with 0")


def passed(client: redis.Redis, worker_id: str, kind: JobKind, cost: int) -> None:
    with client.pipeline(transaction=False) as pipe:
        pipe.hincrby(keys.worker(worker_id), "audits_passed", 1)
        pipe.hincrby(keys.SPOT_CHECKS, "passed", 1)
        pipe.hincrby(keys.SPOT_CHECKS, f"units:{kind.value}", cost)
        pipe.execute()


def caught(client: redis.Redis, worker_id: str, reason: str, *, now: float | None = None) -> None:
    """Quarantine the worker: reputation back to 0, no work until an operator lifts it."""
    now = time.time() if now is None else now
    with client.pipeline(transaction=True) as pipe:
        pipe.hincrby(keys.SPOT_CHECKS, "failed", 1)
        pipe.hincrby(keys.worker(worker_id), "audits_failed", 1)
        pipe.hset(keys.worker(worker_id), mapping={"audits_passed": 0, "quarantined": reason[:300],
                                                   "quarantined_at": repr(now)})
        pipe.execute()


def lift(client: redis.Redis, worker_id: str) -> bool:
    """End a quarantine (operator); False if the worker is not quarantined (nothing is written)."""
    if not client.hget(keys.worker(worker_id), "quarantined"):
        return False
    client.hset(keys.worker(worker_id), mapping={"quarantined": "", "quarantined_at": ""})
    return True
