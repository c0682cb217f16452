"""The control-plane load a run demands, and how many control processes and Redis instances that needs.

The per-chunk costs are parameters whose defaults come from Hydra's own measurements
(``benchmarks/overhead.py``, benchmarks/README "Pipeline overhead", 2-vCPU AMD EPYC, embedded Redis
with ``appendfsync always``): 38,783 Redis commands in 19,548 round trips for 1,000 near-empty chunks
(about 39 commands and 20 round trips per chunk, dispatch and collect, the two workers' heartbeats
included), and 40-70 chunks/s of the control plane's own work per process (55-73 in one process
without Celery, 39-53 through the whole pipeline). Figures marked ASSUMPTION were not measured here.

The fleet view (``cluster.snapshot``): each control and intake process reads every live worker's record
at most once per ``HYDRA_FLEET_VIEW_S``, and, when that read is slow, at most once per REUSE_FACTOR
times the read's own duration however often the registry changes. So per process the view costs at most
``min(workers / view_s, 1 / (REUSE_FACTOR x read time per record))`` commands per second, and at most
1 / REUSE_FACTOR of the process' time.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from ..scheduling.cluster import REUSE_FACTOR


@dataclass(frozen=True)
class ControlCost:
    commands_per_chunk: float = 39.0           # measured: benchmarks/README, Pipeline overhead
    round_trips_per_chunk: float = 20.0        # measured: same
    chunks_per_s_per_process: float = 50.0     # measured range 40-70 (same); the middle
    heartbeat_commands: float = 3.0            # ASSUMPTION: LPUSH of the envelope, the intake's BRPOP, one HSET
    heartbeats_per_s_per_process: float = 2_000.0  # ASSUMPTION: an Ed25519 check and one HSET each (~0.5 ms)
    redis_commands_per_s: float = 20_000.0     # ASSUMPTION: one Redis with appendfsync always; measure on the disk
    fleet_view_s: float = 1.0                  # HYDRA_FLEET_VIEW_S (default)
    read_s_per_record: float = 20e-6           # ASSUMPTION until measured: one worker record in the view's pipelined read


@dataclass(frozen=True)
class Load:
    dispatches_per_s_mean: float
    dispatches_per_s_peak: float               # the busiest minute
    merges_per_s_mean: float
    merges_per_s_peak: float
    heartbeats_per_s: float
    redis_commands_per_s: float                # per-chunk commands + heartbeats + fleet views, at the peak minute
    redis_round_trips_per_s: float
    fleet_view_commands_per_s: float           # the processes' fleet views (cluster.snapshot), at most
    processes: int                             # control processes for the peak chunks and heartbeats
    processes_range: tuple[int, int]           # at 70 and at 40 chunks/s per process
    redis_instances: int                       # for all of it, fleet views included
    peak_intake_backlog_one: int               # results waiting at the intake with one process
    peak_intake_backlog: int                   # ... with ``processes`` processes


def _per_minute_peak(bins: Counter[int]) -> float:
    minutes: Counter[int] = Counter()
    for second, n in bins.items():
        minutes[second // 60] += n
    return max(minutes.values(), default=0) / 60.0


def _backlog(bins: Counter[int], rate: float) -> int:
    """Peak results waiting at an intake that merges ``rate`` per second (a fluid queue, 1 s steps)."""
    backlog = peak = 0.0
    if not bins:
        return 0
    for second in range(min(bins), max(bins) + 1):
        backlog = max(0.0, backlog + bins.get(second, 0) - rate)
        peak = max(peak, backlog)
    return int(math.ceil(peak))


def load(dispatch_bins: Counter[int], merge_bins: Counter[int], *, span_s: float, live_workers_peak: int,
         heartbeat_s: float, cost: ControlCost = ControlCost()) -> Load:
    dispatches, merges = sum(dispatch_bins.values()), sum(merge_bins.values())
    d_peak, m_peak = _per_minute_peak(dispatch_bins), _per_minute_peak(merge_bins)
    chunks_peak = max(d_peak, m_peak)
    heartbeats = live_workers_peak / heartbeat_s
    commands = chunks_peak * cost.commands_per_chunk + heartbeats * cost.heartbeat_commands
    # A process spends at most 1/REUSE_FACTOR of its time on its fleet view, so it keeps the rest for chunks.
    busy_share = 1.0 - 1.0 / REUSE_FACTOR

    def procs(rate: float) -> int:
        return max(1, math.ceil((chunks_peak / rate + heartbeats / cost.heartbeats_per_s_per_process) / busy_share))

    n = procs(cost.chunks_per_s_per_process)
    per_process = min(live_workers_peak / cost.fleet_view_s, 1.0 / (REUSE_FACTOR * cost.read_s_per_record))
    views = n * per_process if live_workers_peak else 0.0
    return Load(dispatches / span_s, d_peak, merges / span_s, m_peak, heartbeats, commands + views,
                chunks_peak * cost.round_trips_per_chunk + heartbeats * 2, views, n, (procs(70.0), procs(40.0)),
                max(1, math.ceil((commands + views) / cost.redis_commands_per_s)),
                _backlog(merge_bins, cost.chunks_per_s_per_process), _backlog(merge_bins, n * cost.chunks_per_s_per_process))
