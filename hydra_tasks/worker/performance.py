"""The worker performance model: what each worker has shown it can do, kept in its registry hash.

* **Throughput** per job kind (π samples/s, Mandelbrot iterations/s), an exponentially
  weighted moving average of accepted chunks, so recent results weigh more; seeded by the
  calibration the worker runs at start.
* **Consistency**: 1 − the coefficient of variation of those observations (EWMA of the
  absolute deviation), in [0, 1].
* **Reliability**: accepted chunks against failed chunks and expired leases, with Laplace
  smoothing so a new worker starts at 0.5·(1 + ...) rather than at an extreme.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from .. import keys

if TYPE_CHECKING:
    from ..lua import Deferred

ALPHA = 0.3  # weight of the newest observation


@dataclass(frozen=True)
class Performance:
    rate: float          # EWMA work units per second (0 if never observed)
    deviation: float     # EWMA of |observation - rate|
    observations: int

    @property
    def consistency(self) -> float:
        if self.rate <= 0:
            return 0.0
        return max(0.0, 1.0 - self.deviation / self.rate)


def _f(raw: dict[str, str], name: str) -> float:
    try:
        return float(raw.get(name, 0.0) or 0.0)
    except ValueError:
        return 0.0


def performance(raw: dict[str, str], kind: str) -> Performance:
    return Performance(_f(raw, f"rate:{kind}"), _f(raw, f"dev:{kind}"), int(_f(raw, f"n:{kind}")))


def reliability(ok: int, failed: int, expired: int) -> float:
    return (ok + 1) / (ok + failed + expired + 2)


# The calibration a worker runs at start is the prior of its model.
CALIBRATION_FIELD = {"pi": "pi_samples_per_s", "mandelbrot": "mandelbrot_iters_per_s"}


def updated(current: Performance, calibrated: float, work: float, elapsed_s: float) -> Performance:
    """The model after one accepted chunk of ``work`` units in ``elapsed_s`` (the calibration is
    the prior until the first observation)."""
    sample = work / max(elapsed_s, 1e-6)
    prior = current.rate if current.observations else calibrated
    if prior <= 0:
        return Performance(sample, 0.0, current.observations + 1)
    return Performance((1 - ALPHA) * prior + ALPHA * sample,
                       (1 - ALPHA) * current.deviation + ALPHA * abs(sample - prior), current.observations + 1)


def record_observation(pipe: "redis.client.Pipeline | Deferred", worker_id: str, kind: str, perf: Performance) -> None:
    """Queue the writes of :func:`updated`'s result on ``pipe`` (executed by the caller)."""
    key = keys.worker(worker_id)
    pipe.hset(key, mapping={f"rate:{kind}": repr(perf.rate), f"dev:{kind}": repr(perf.deviation)})
    pipe.hincrby(key, f"n:{kind}", 1)
    pipe.hincrby(key, "ok", 1)


def record_failure(client: redis.Redis, worker_id: str) -> None:
    client.hincrby(keys.worker(worker_id), "failed", 1)


def record_expiry(client: redis.Redis, worker_id: str) -> None:
    client.hincrby(keys.worker(worker_id), "expired", 1)
