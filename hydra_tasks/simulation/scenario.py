"""An internet-scale scenario: a population, a day of jobs, one run carbon-aware and one carbon-blind."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..models import JobKind
from ..settings import Settings
from . import SimulationError
from . import grid as sim_grid
from . import population
from .capacity import ControlCost, Load, load
from .engine import Engine, EngineConfig
from .fleet import Fleet
from .model import Job, Stats


@dataclass(frozen=True)
class Scenario:
    hosts: int = 1000
    hours: float = 24.0
    seed: int = 1
    cheater_share: float = 0.01
    cheat_blocks: int = 4             # π blocks of 64 a cheater fabricates per result
    load: float = 0.5                 # the jobs' work / what the fleet can compute during the arrival window
    jobs: int = 60
    arrival_h: float = 12.0           # jobs arrive uniformly at random in [0, arrival_h)
    deadline_share: float = 0.5       # share of jobs with a deadline (time shifting)
    slack_h: tuple[float, ...] = (8.0, 12.0)  # deadline = arrival + one of these (capped at the horizon)
    target_chunk_s: float = 3600.0    # HYDRA_TARGET_CHUNK_S at internet scale (BOINC tasks run for hours)
    min_chunk_s: float = 300.0
    lease_s: float = 600.0
    churn: bool = True
    start: str = "2022-06-13T00:00:00+00:00"
    trace: str | None = None          # None: the shared 2022 trace; "": no carbon data (flat grid)
    replan_s: float = 300.0
    backup_every_s: float = 60.0
    reference_every_s: float = 3600.0

    def settings(self, *, grid_aware: bool) -> Settings:
        return Settings().with_(target_chunk_s=self.target_chunk_s, min_chunk_s=self.min_chunk_s,
                                lease_s=self.lease_s, grid_aware=grid_aware)


@dataclass
class RunResult:
    stats: Stats
    jobs: list[Job]
    makespan_s: float | None          # first arrival to the last job's last merge (None: not all finished)
    unfinished: int
    load: Load


@dataclass
class Outcome:
    scenario: Scenario
    pop: population.Population
    grid: sim_grid.Grid
    ideal_s: float
    available_proc_s: float
    work: float
    runs: dict[str, RunResult] = field(default_factory=dict)


def make_jobs(s: Scenario, pop: population.Population, rng: np.random.Generator) -> tuple[list[tuple], float]:
    """(arrival, samples, deadline) per job, and the total work."""
    cap = population.capacity_curve(pop)
    window = cap[: int(s.arrival_h * 60)].sum() * 60.0
    total = s.load * window
    sizes = rng.lognormal(0.0, 1.0, s.jobs)
    sizes = np.maximum((sizes / sizes.sum() * total).astype(np.int64), 1)
    arrivals = np.sort(rng.uniform(0.0, s.arrival_h * 3600.0, s.jobs))
    horizon = s.hours * 3600.0
    specs = []
    for k in range(s.jobs):
        deadline = None
        if rng.random() < s.deadline_share:
            deadline = min(float(arrivals[k] + 3600.0 * float(rng.choice(s.slack_h))), horizon - 600.0)
        specs.append((float(arrivals[k]), int(sizes[k]), deadline))
    return specs, float(sizes.sum())


def ideal_makespan(pop: population.Population, specs: list[tuple]) -> float:
    """A fluid bound: every available process busy on the earliest work, minute by minute."""
    cap = population.capacity_curve(pop) * 60.0
    arrivals = np.zeros(cap.size)
    for arrival, size, _ in specs:
        arrivals[min(int(arrival // 60), cap.size - 1)] += size
    last = int(max(a for a, _, _ in specs) // 60)
    backlog = 0.0
    for m in range(cap.size):
        backlog += arrivals[m]
        if backlog <= cap[m] and m >= last:
            return (m + (backlog / cap[m] if cap[m] > 0 else 1.0)) * 60.0 - min(a for a, _, _ in specs)
        backlog = max(0.0, backlog - cap[m])
    return math.inf


def build(s: Scenario) -> Outcome:
    if s.hosts < 1 or s.hours <= 0:
        raise SimulationError("a scenario needs at least one host and a positive duration")
    horizon = s.hours * 3600.0
    pop = population.draw(s.hosts, horizon_s=horizon, seed=s.seed, cheater_share=s.cheater_share, churn=s.churn)
    start = sim_grid.parse_start(s.start)
    grid = (sim_grid.flat(pop.regions, start=start, horizon_s=horizon) if s.trace == "" else
            sim_grid.load(pop.regions, start=start, horizon_s=horizon, trace=Path(s.trace) if s.trace else None))
    specs, work = make_jobs(s, pop, np.random.default_rng(s.seed + 7))
    available = float(((pop.on_end - pop.on_start) * pop.cores[pop.on_host]).sum())
    return Outcome(s, pop, grid, ideal_makespan(pop, specs), available, work)


def run(out: Outcome, *, grid_aware: bool, cost: ControlCost = ControlCost()) -> RunResult:
    s, pop = out.scenario, out.pop
    settings = s.settings(grid_aware=grid_aware)
    speed = pop.proc_speed().tolist()
    fleet = Fleet(settings, region=pop.region.tolist(), regions=pop.regions, cores=pop.cores.tolist(),
                  pi_speed=speed, mandel_speed=[v * population.MANDEL_PER_PI for v in speed],
                  pi_calibration=pop.core_speed.tolist(),
                  mandel_calibration=(pop.core_speed * population.MANDEL_PER_PI).tolist(),
                  cpu_limit=pop.cpu_limit.tolist(), exact=False)
    specs, _ = make_jobs(s, pop, np.random.default_rng(s.seed + 7))
    jobs = [Job(f"j{k}", JobKind.PI, size, arrival, deadline) for k, (arrival, size, deadline) in enumerate(specs)]
    events = sorted([(float(t), int(h), True) for t, h in zip(pop.on_start, pop.on_host)]
                    + [(float(t), int(h), False) for t, h in zip(pop.on_end, pop.on_host) if t < pop.horizon_s])
    config = EngineConfig(horizon_s=pop.horizon_s, grid_aware=grid_aware, cheat_blocks=s.cheat_blocks,
                          replan_s=s.replan_s, backup_every_s=s.backup_every_s,
                          reference_every_s=s.reference_every_s, seed=s.seed)
    engine = Engine(settings, fleet, out.grid, config, jobs, pop.cheater.tolist(), events)
    stats = engine.run()
    finished = [j for j in jobs if j.finished_at is not None]
    first = min(j.arrival for j in jobs)
    makespan = max(j.finished_at or 0.0 for j in jobs) - first if len(finished) == len(jobs) else None
    span = max(stats.sim_end - first, 1.0)
    result = load(stats.dispatch_bins, stats.merge_bins, span_s=span, live_workers_peak=engine.peak_live,
                  heartbeat_s=settings.heartbeat_s, cost=cost)
    return RunResult(stats, jobs, makespan, len(jobs) - len(finished), result)
