"""The control-plane load a run demands, and how many control processes and Redis instances that needs.

The per-chunk costs are parameters whose defaults come from Hydra's own measurements
(``benchmarks/overhead.py``, benchmarks/README "Pipeline overhead", 2-vCPU AMD EPYC, embedded Redis
with ``appendfsync always``): 38,783 Redis commands in 19,548 round trips for 1,000 near-empty chunks
(about 39 commands and 20 round trips per chunk, dispatch and collect, the two workers' heartbeats
included), and 40-70 chunks/s of the control plane's own work per process (55-73 in one process
without Celery, 39-53 through the whole pipeline). Figures marked ASSUMPTION were not measured here.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class ControlCost:
    commands_per_chunk: float = 39.0           # measured: benchmarks/README, Pipeline overhead
    round_trips_per_chunk: float = 20.0        # measured: same
    chunks_per_s_per_process: float = 50.0     # measured range 40-70 (same); the middle
    heartbeat_commands: float = 3.0            # ASSUMPTION: LPUSH of the envelope, the intake's BRPOP, one HSET
    heartbeats_per_s_per_process: float = 2_000.0  # ASSUMPTION: an Ed25519 check and one HSET each (~0.5 ms)
    redis_commands_per_s: float = 20_000.0     # ASSUMPTION: one Redis with appendfsync always; measure on the disk
    snapshot_reads_per_chunk: float = 2.0      # today's code: cluster.snapshot per merge and per dispatch reads
    #                                            every worker record (benchmarks/README): x live workers


@dataclass(frozen=True)
class Load:
    dispatches_per_s_mean: float
    dispatches_per_s_peak: float               # the busiest minute
    merges_per_s_mean: float
    merges_per_s_peak: float
    heartbeats_per_s: float
    redis_commands_per_s: float                # per-chunk commands + heartbeats, at the peak minute
    redis_round_trips_per_s: float
    snapshot_commands_per_s: float             # what today's fleet-wide snapshot reads would add
    processes: int                             # control processes for the peak chunks and heartbeats
    processes_range: tuple[int, int]           # at 70 and at 40 chunks/s per process
    redis_instances: int                       # without the snapshot reads
    redis_instances_today: int                 # with them
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
    snapshot = chunks_peak * cost.snapshot_reads_per_chunk * live_workers_peak

    def procs(rate: float) -> int:
        return max(1, math.ceil(chunks_peak / rate + heartbeats / cost.heartbeats_per_s_per_process))

    n = procs(cost.chunks_per_s_per_process)
    return Load(dispatches / span_s, d_peak, merges / span_s, m_peak, heartbeats, commands,
                chunks_peak * cost.round_trips_per_chunk + heartbeats * 2, snapshot, n, (procs(70.0), procs(40.0)),
                max(1, math.ceil(commands / cost.redis_commands_per_s)),
                max(1, math.ceil((commands + snapshot) / cost.redis_commands_per_s)),
                _backlog(merge_bins, cost.chunks_per_s_per_process), _backlog(merge_bins, n * cost.chunks_per_s_per_process))
