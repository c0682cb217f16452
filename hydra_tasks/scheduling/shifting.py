"""Time (and place) shifting for jobs with a deadline.

A job with a deadline need not run on every free worker at once. Given each live worker's
expected carbon intensity hour by hour until the deadline (a forecast, a trace, or the flat
annual mean), :func:`plan` books the cleanest (worker, hour) slots that still finish the job in
time and turns the booking into a *threshold*: now, the job runs only on workers whose power is
at most as dirty as the dirtiest slot it booked (``Router.choose(max_intensity=...)``).

* Future capacity is counted at ``HYDRA_SHIFT_SAFETY`` of what the workers measure today
  (volunteers come and go), less ``headroom``, the share kept free for work that has not been
  submitted yet (new jobs, and bursts of urgent ones, must find room without pushing a deferred
  job past its deadline); a job must end ``reserve_s`` before its deadline, and is booked as if it
  had ``margin`` more work left than estimated (speed estimates err, failed chunks are redone).
* The plan is redone with the remaining work every few seconds, so a job that falls behind
  raises its own threshold; when no later slot can finish it, the threshold is unbounded and it
  runs everywhere, cleanest first.
* Jobs without a deadline run at once: they book the first hours' capacity before deadline jobs
  plan, and deadline jobs book in deadline order, so two of them never count on the same clean
  hour.
* Waiting has a price per job (``Demand.delay_weight``, the job spec's ``delay_weight``): a slot k
  hours ahead is booked as if its power were ``k * delay_weight`` gCO2/kWh dirtier, so a job waits
  only for hours that are cleaner by more than the wait is worth to its owner; the threshold is the
  highest such price booked, and the current hour (k = 0) is compared at its plain intensity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from ..worker.registry import WorkerInfo

HOUR_S = 3600.0
MAX_HORIZON_H = 72        # forecasts rarely reach further; later hours count as of unknown intensity
UNBOUNDED = math.inf


@dataclass(frozen=True)
class Demand:
    """A job's remaining work in its kind's units (samples, iterations), its deadline, and what an hour
    of waiting costs it (``delay_weight``, in gCO2/kWh per hour: a slot k hours from now is booked as if
    its power were that much dirtier per hour; 0 = wait as long as the deadline allows if it is cleaner)."""

    job_id: str
    kind: str
    remaining: float
    deadline_ts: float | None = None
    delay_weight: float = 0.0


#: intensity(worker_id, hour_index) -> effective gCO2/kWh of that worker's power in that hour
#: (hour 0 is the current hour); None if unknown (then the slot is used only as a last resort).
Intensity = Callable[[str, int], float | None]


def plan(demands: Sequence[Demand], workers: Iterable[WorkerInfo], intensity: Intensity, *, now: float,
         safety: float, reserve_s: float = 0.0, horizon_h: int = MAX_HORIZON_H,
         headroom: float = 0.0, margin: float = 0.0) -> dict[str, float]:
    """The carbon threshold (gCO2/kWh) for each job with a deadline; see the module docstring.
    ``headroom`` (0 <= headroom < 1) is the share of every later hour left for work not yet submitted;
    ``margin`` (>= 0) books every job as if it had that share more work left than estimated."""
    if not 0.0 <= headroom < 1.0:
        raise ValueError(f"headroom must be in [0, 1); got {headroom}")
    if not margin >= 0.0:
        raise ValueError(f"margin must be >= 0; got {margin}")
    live = [w for w in workers if w.concurrency > 0]
    hour0 = math.floor(now / HOUR_S) * HOUR_S
    # Free process-seconds per (worker, hour), counted at the safety share of measured capacity.
    free: dict[tuple[str, int], float] = {}

    def seconds(worker: WorkerInfo, k: int, until: float) -> float:
        start, end = max(hour0 + k * HOUR_S, now), min(hour0 + (k + 1) * HOUR_S, until)
        return max(end - start, 0.0) * worker.concurrency * (1.0 if k == 0 else safety * (1.0 - headroom))

    for w in live:
        for k in range(horizon_h):
            free[(w.worker_id, k)] = seconds(w, k, math.inf)
    cost: dict[tuple[str, int], float] = {}
    for w in live:
        for k in range(horizon_h):
            value = intensity(w.worker_id, k)
            cost[(w.worker_id, k)] = UNBOUNDED if value is None else value
    rate = {w.worker_id: w for w in live}

    def book(demand: Demand, slots: list[tuple[str, int]], until: float) -> float | None:
        """Book slots in the given order; the highest booked price (intensity plus the job's delay
        weight per hour ahead), or None if they fall short."""
        left, worst = demand.remaining * (1.0 + margin), 0.0
        for slot in slots:
            if left <= 0:
                break
            worker = rate[slot[0]]
            usable = min(free[slot], seconds(worker, slot[1], until) if until < math.inf else free[slot])
            if usable <= 0:
                continue
            per_s = max(worker.rate(demand.kind), 1.0)
            take_s = min(usable, left / per_s)
            free[slot] -= take_s
            left -= take_s * per_s
            worst = max(worst, cost[slot] + demand.delay_weight * slot[1])
        return worst if left <= 1e-9 * max(demand.remaining * (1.0 + margin), 1.0) else None

    asap = sorted(free, key=lambda s: (s[1], cost[s]))
    thresholds: dict[str, float] = {}
    for demand in [d for d in demands if d.deadline_ts is None]:
        book(demand, asap, math.inf)
    for demand in sorted((d for d in demands if d.deadline_ts is not None), key=lambda d: d.deadline_ts or 0.0):
        until = (demand.deadline_ts or 0.0) - reserve_s
        window = [s for s in free if hour0 + s[1] * HOUR_S < until]
        weight = demand.delay_weight
        worst = book(demand, sorted(window, key=lambda s: (cost[s] + weight * s[1], s[1])), until)
        thresholds[demand.job_id] = UNBOUNDED if worst is None else worst
    return thresholds


def forecast_intensity(workers: Iterable[WorkerInfo], now_intensity: Mapping[str, float],
                       hourly: Callable[[WorkerInfo, int], list[float | None]], hours: int) -> Intensity:
    """An :data:`Intensity` from the router's current values (hour 0, so that the plan and the
    router compare the same numbers) and per-worker hourly forecasts for the later hours."""
    table = {w.worker_id: hourly(w, hours) for w in workers}

    def intensity(worker_id: str, k: int) -> float | None:
        if k == 0 and worker_id in now_intensity:
            return now_intensity[worker_id]
        values = table.get(worker_id, [])
        return values[k] if k < len(values) else None

    return intensity
