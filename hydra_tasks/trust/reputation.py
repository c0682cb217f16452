"""Reputation and quarantine (issue 12, items 2 and 3): how hard each worker's results are
audited, and what happens to a worker caught by a spot check.

* **Reputation** is the number of audits a worker passed since it was last caught (``audits_passed``
  in its record; a failure sets it back to 0). Every result is audited (never zero), but how much of
  it depends on the reputation (:func:`picks`): a worker on probation (fewer than 10 clean audits)
  has 32 of its 64 π blocks recomputed (or 512 Mandelbrot pixels besides one row), so a cheater that
  fabricates even one block in 64 is caught at each result with probability 1/2, within 10 results
  with probability 0.999, and one that alters 1% of a tile's pixels at each tile with probability
  above 0.99; then 8 blocks (128 px) below 50, 4 (32) below 200, and 2 (8) from 200 on: honest
  veterans cost about 3% of their π work and one row (plus 8 px) of each tile.
* **The fleet's honesty** moves the rates too: for an hour after any worker was caught
  (``last_caught_at`` in ``hydra:spot_checks``), reputations count half, so trust is earned twice as
  slowly while cheaters are about.
* **Quarantine**: a worker whose result fails a check gets no more work until an operator lifts it
  (``hydra quarantine lift WORKER``): the scheduler's snapshot leaves it out and GRANT refuses it,
  even if it re-registers; its other chunks are taken back at once, and its past results are revoked
  (:mod:`.consequences`).
"""

from __future__ import annotations

import time

import redis

from .. import keys
from ..models import JobKind

#: (reputation at least, π blocks of 64 to recompute, Mandelbrot pixels besides one row), from the top.
POLICY = ((200, 2, 8), (50, 4, 32), (10, 8, 128), (0, 32, 512))
ALERT_S = 3600.0  # after a catch anywhere, reputations count half for this long


def picks(kind: JobKind, reputation: int, *, alert: bool = False) -> int:
    """How many parts of a result from a worker with ``reputation`` clean audits to recompute
    (``alert``: a worker was caught in the last hour)."""
    effective = reputation // 2 if alert else reputation
    for at_least, pi_blocks, pixels in POLICY:
        if effective >= at_least:
            return pi_blocks if kind is JobKind.PI else pixels
    raise AssertionError("POLICY ends with 0")


def alert(client: redis.Redis, *, now: float | None = None) -> bool:
    """Whether a worker was caught in the last hour."""
    last = client.hget(keys.SPOT_CHECKS, "last_caught_at")
    return bool(last) and (time.time() if now is None else now) - float(last) < ALERT_S


def passed(client: redis.Redis, worker_id: str, kind: JobKind, cost: int, *, remote: bool = False,
           settled: bool = True) -> None:
    """Count an audit of the worker's result that matched: ``cost`` work recomputed (by an auditor
    when ``remote``); ``settled=False`` while another part of the same audit is still out (the
    reputation grows once per audited result)."""
    with client.pipeline(transaction=False) as pipe:
        queue_passed(pipe, worker_id, kind, cost, remote=remote, settled=settled)
        pipe.execute()


def queue_passed(pipe: redis.client.Pipeline, worker_id: str, kind: JobKind, cost: int, *, remote: bool = False,
                 settled: bool = True) -> None:
    """:func:`passed`'s writes, queued on the caller's pipeline (collect sends them with the merge)."""
    if settled:
        pipe.hincrby(keys.worker(worker_id), "audits_passed", 1)
        pipe.hincrby(keys.SPOT_CHECKS, "passed", 1)
    pipe.hincrby(keys.SPOT_CHECKS, f"{'remote' if remote else 'units'}:{kind.value}", cost)


def caught(client: redis.Redis, worker_id: str, reason: str, *, now: float | None = None) -> None:
    """Quarantine the worker: reputation back to 0, no work until an operator lifts it."""
    now = time.time() if now is None else now
    with client.pipeline(transaction=True) as pipe:
        pipe.hincrby(keys.SPOT_CHECKS, "failed", 1)
        pipe.hset(keys.SPOT_CHECKS, "last_caught_at", repr(now))
        pipe.hincrby(keys.worker(worker_id), "audits_failed", 1)
        pipe.hset(keys.worker(worker_id), mapping={"audits_passed": 0, "quarantined": reason[:300],
                                                   "quarantined_at": repr(now)})
        pipe.set(keys.WORKERS_GEN, keys.new_generation())  # out of every view of the fleet at once
        pipe.execute()


def lift(client: redis.Redis, worker_id: str) -> bool:
    """End a quarantine (operator); False if the worker is not quarantined (nothing is written)."""
    if not client.hget(keys.worker(worker_id), "quarantined"):
        return False
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(keys.worker(worker_id), mapping={"quarantined": "", "quarantined_at": ""})
        pipe.set(keys.WORKERS_GEN, keys.new_generation())
        pipe.execute()
    return True
