"""The discrete-event engine: simulated volunteers, Hydra's real control-plane decisions.

A heapq of timed events (job arrivals, hosts coming and going, chunks finishing, results merging,
leases expiring, hourly grid changes, time-shifting re-plans). Every decision the control plane makes
is a call into the module that makes it in Hydra (see the package docstring); what the simulator
does itself is the bookkeeping Redis and the Lua scripts do (leases, windows, the done-set, the
todo list) and the volunteers' side (computing, going away). Audit chunks are not simulated as
chunks: every picked block is checked when the result arrives (the verdict the audit would reach).
"""

from __future__ import annotations

import gc
import heapq
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..grid import accounting
from ..jobs import pi as pi_kind
from ..jobs import tiling
from ..jobs.collect import _Lease, observed_elapsed
from ..ledger import rewards
from ..lua import Holders
from ..models import ChunkResult, ChunkSpec, JobKind
from ..scheduling.cluster import ClusterSnapshot
from ..scheduling.grants import heavy_or_light
from ..scheduling.planner import range_chunk_size
from ..scheduling.router import UNBOUNDED, CapacityRouter, GridAwareRouter
from ..scheduling.shifting import Demand
from ..scheduling.shifting import plan as shifting_plan
from ..scheduling.stragglers import expected_finish, worth_a_backup
from ..settings import Settings
from ..trust import reputation
from ..worker import performance
from .fleet import Fleet, evolve
from .grid import HOUR_S, Grid
from .model import Chunk, Job, Lease, Stats

BLIND_FALLBACK_G_PER_KWH = 475.0  # where a region has no signal (collect uses the fleet's mean; the trace covers all)
ARRIVE, ON, OFF, GONE, DONE, MERGE, EXPIRE, HOUR, REPLAN, REFERENCE = range(10)


@dataclass
class EngineConfig:
    horizon_s: float
    grid_aware: bool = True
    cheat_blocks: int = 4                 # π blocks of 64 a cheater fabricates in each result
    merge_s: float = 0.0                  # intake service time per result (0: the control plane keeps up)
    latency_s: float = 0.0                # one-way message latency (dispatch -> worker, result -> intake)
    replan_s: float = 300.0               # time-shifting re-plan interval (Hydra: <= 10 s)
    backup_every_s: float = 0.0           # a job's straggler pass at most this often (Hydra: every dispatch)
    reference_every_s: float = 3600.0     # the confirmed view's median reference refresh
    seed: int = 0


@dataclass
class Engine:
    settings: Settings
    fleet: Fleet
    grid: Grid
    config: EngineConfig
    jobs: list[Job]
    cheater: list[bool]
    on_events: list[tuple[float, int, bool]]  # (time, host, on?)
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        self.now = 0.0
        self._events: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._rng = random.Random(self.config.seed)
        self.epoch = [0] * self.fleet.n
        self.queue: list[deque[Lease]] = [deque() for _ in range(self.fleet.n)]
        self.busy = [0] * self.fleet.n
        self.held_leases: list[dict[Lease, None]] = [{} for _ in range(self.fleet.n)]  # ordered: deterministic
        self.results_log: list[list[tuple[Chunk, int]]] = [[] for _ in range(self.fleet.n)]
        self.last_caught = -math.inf
        self.active: list[Job] = []
        self.thresholds: dict[str, float] = {}
        self._intake_free_at = 0.0
        self.hour = -1
        self._region_free: list[float] = [0.0] * len(self.grid.regions)
        self.signals: dict[str, Any] = {}         # this hour's RegionSignal per region (_hour)
        self.capacity: dict[str, float] = {}      # live capacity per region, for the counterfactual (_reference)
        self.blind_g_per_kwh: float | None = None
        for t, host, on in self.on_events:
            self._push(t, ON if on else OFF, host)
        for job in self.jobs:
            self._push(job.arrival, ARRIVE, job)
        self._push(0.0, HOUR, None)
        if self.config.grid_aware:
            self._push(0.0, REPLAN, None)
        self._push(0.0, REFERENCE, None)

    @property
    def peak_live(self) -> int:
        return self.fleet.peak_live

    def submit(self, job: Job, at: float) -> None:
        """Add a job arriving at ``at`` (after a run stopped, e.g. when the previous job finished)."""
        job.arrival = at
        self.jobs.append(job)
        self._push(at, ARRIVE, job)
        self._push(at, REFERENCE, None)

    # --- the loop -------------------------------------------------------------------------------
    def _push(self, t: float, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, kind, payload))

    def run(self, *, until: float | None = None, stop_when_done: bool = True) -> Stats:
        end = self.config.horizon_s if until is None else until
        handlers: dict[int, Callable[[Any], None]] = {
            ARRIVE: self._arrive, ON: self._on, OFF: self._off, GONE: self._gone, DONE: self._done,
            MERGE: self._merge, EXPIRE: self._expire, HOUR: self._hour, REPLAN: self._replan,
            REFERENCE: self._reference}
        t0 = time.perf_counter()
        events = self._events
        # The cyclic GC is off during the loop: its full passes over millions of live objects (chunks,
        # leases, records) cost about 13% of a run and found nothing (the loop leaves no cyclic garbage:
        # what it drops is freed by reference counting). Back on afterwards, as it was.
        collecting = gc.isenabled()
        gc.disable()
        try:
            while events:
                t, _, kind, payload = heapq.heappop(events)
                if t > end:
                    break
                self.now = t
                self.stats.events += 1
                handlers[kind](payload)
                if stop_when_done and kind == MERGE and self.stats.jobs_done == len(self.jobs):
                    break
        finally:
            if collecting:
                gc.enable()
        self.stats.wall_s = time.perf_counter() - t0
        self.stats.sim_end = self.now
        return self.stats

    # --- hosts ------------------------------------------------------------------------------------
    def _on(self, i: int) -> None:
        f = self.fleet
        f.on[i] = True
        self.epoch[i] += 1
        if not f.quarantined[i]:
            f.come_back(i)  # registration (its record's started_at and last_seen are not simulated)
            self._dispatch()

    def _off(self, i: int) -> None:
        """The host goes away: what it computes or holds queued is lost (leases expire later); the
        control plane sees it go only when its heartbeat is HYDRA_WORKER_TIMEOUT_S old."""
        self.fleet.on[i] = False
        self.epoch[i] += 1
        self.stats.queued_now -= len(self.queue[i])
        self.queue[i].clear()
        self.busy[i] = 0
        for lease in list(self.held_leases[i]):  # lost: each expires at its deadline (lease expiries are events
            if not lease.backup:           # only where one can happen, which saves one event per chunk)
                self._push(max(lease.deadline, self.now), EXPIRE, lease)
        self._push(self.now + self.settings.worker_timeout_s, GONE, (i, self.epoch[i]))

    def _gone(self, payload: tuple[int, int]) -> None:
        i, epoch = payload
        if self.epoch[i] == epoch:
            self.fleet.set_live(i, False)
            self.stats.queued_now -= len(self.queue[i])  # the sweeper empties its direct queue
            self.queue[i].clear()

    def _start(self, i: int) -> None:
        f = self.fleet
        while f.on[i] and self.busy[i] < f.cores[i] and self.queue[i]:
            lease = self.queue[i].popleft()
            self.stats.queued_now -= 1
            if lease.released:
                continue
            chunk = lease.chunk
            speed = f.mandel_speed[i] if chunk.job.kind is JobKind.MANDELBROT else f.pi_speed[i]
            lease.compute_s = chunk.work / speed
            if not lease.backup and self.now + lease.compute_s > lease.deadline:
                self._push(max(lease.deadline, self.now), EXPIRE, lease)  # the sweeper requeues it first
            self.busy[i] += 1
            self.stats.busy_s += lease.compute_s  # process-seconds spent, useful or not
            self.stats.busy_work += chunk.work
            self._push(self.now + lease.compute_s, DONE, (lease, self.epoch[i]))

    def _done(self, payload: tuple[Lease, int]) -> None:
        lease, epoch = payload
        i = lease.host
        if self.epoch[i] != epoch:
            return  # the host went away meanwhile: lost
        self.busy[i] -= 1
        self._start(i)
        arrive = self.now + self.config.latency_s
        if self.config.merge_s > 0:  # one intake process, results in order
            self._intake_free_at = max(self._intake_free_at, arrive) + self.config.merge_s
            self._push(self._intake_free_at, MERGE, lease)
        else:
            self._push(arrive, MERGE, lease)

    # --- jobs and dispatch ----------------------------------------------------------------------
    def _arrive(self, job: Job) -> None:
        self.active.append(job)
        self.active.sort(key=lambda j: (j.deadline if j.deadline is not None else j.arrival, j.arrival))
        job.started_at = None
        self._dispatch()

    def _hour(self, _: Any) -> None:
        """A new hour of the trace: the router's signals, the counterfactual's capacity, the median."""
        self.hour = self.grid.hour(self.now)
        signals = self.grid.signals(self.hour)
        self.signals = dict(signals)
        self.intensity = [float(self.grid.g_per_kwh[r, self.hour]) for r in range(len(self.grid.regions))]
        self._current_router: CapacityRouter | GridAwareRouter
        if self.config.grid_aware:
            self._current_router = GridAwareRouter.by_region(
                signals, carbon_weight=self.settings.carbon_weight, cost_weight=self.settings.cost_weight,
                renewable_weight=self.settings.renewable_weight)
        else:
            self._current_router = CapacityRouter()
        self._rebuild_candidates()
        self._blind_mix()
        self._push((self.hour + 1) * HOUR_S, HOUR, None)

    def _reference(self, _: Any) -> None:
        f = self.fleet
        confirmed = sorted(f.raw[i].rate("pi") for i in range(f.n) if f.live[i] and f.raw[i].perf_pi.observations >= 3)
        confirmed_m = sorted(f.raw[i].rate("mandelbrot") for i in range(f.n)
                             if f.live[i] and f.raw[i].perf_mandelbrot.observations >= 3)
        live = sorted(f.raw[i].rate("pi") for i in range(f.n) if f.live[i])
        live_m = sorted(f.raw[i].rate("mandelbrot") for i in range(f.n) if f.live[i])
        pool, pool_m = confirmed or live, confirmed_m or live_m
        if pool and pool_m:
            f.set_reference({"pi": pool[(len(pool) - 1) // 2], "mandelbrot": pool_m[(len(pool_m) - 1) // 2]})
        rates = sorted(f.rate[i] for i in range(f.n) if f.live[i])
        self.median_speed = rates[len(rates) // 2] if rates else 0.0
        self.capacity = {}
        for i in range(f.n):
            if f.live[i]:
                r = f.regions[f.region[i]]
                self.capacity[r] = self.capacity.get(r, 0.0) + f.rate[i] * f.cores[i]
        self._blind_mix()
        self._rebuild_candidates()
        if self.stats.jobs_done < len(self.jobs):
            self._push(self.now + self.config.reference_every_s, REFERENCE, None)

    def _blind_mix(self) -> None:
        """The intensity carbon-blind (capacity-proportional) routing would have run at, for this hour's
        signals and capacity: once per change, as collect._fleet_carbon does once per view of the fleet
        (the real chunk_carbon computes it, for one kWh). None until there is capacity."""
        capacity = self.capacity
        self.blind_g_per_kwh = None
        if sum(capacity.values()) > 0:
            self.blind_g_per_kwh = accounting.chunk_carbon(
                accounting.J_PER_KWH, next(iter(capacity)), self.signals, capacity,
                fallback_g_per_kwh=BLIND_FALLBACK_G_PER_KWH).counterfactual_g

    def _rebuild_candidates(self) -> None:
        f = self.fleet
        if f.exact:
            return
        placeholder = f.raw[0]
        self.cand = ClusterSnapshot(self.now, {r: placeholder for r in self.grid.regions},
                                    {r: 1 for r in self.grid.regions})
        self.cand_free: dict[str, int] = {r: 0 for r in self.grid.regions}
        self.cand_host: dict[str, int] = {}
        for r in range(len(self.grid.regions)):
            self._refresh_candidate(r)

    def _refresh_candidate(self, r: int) -> None:
        f, name = self.fleet, self.grid.regions[r]
        top = f.top(r)
        if top is None:
            self.cand_free[name] = 0
            self._region_free[r] = 0.0
            return
        self.cand.workers[name] = f.info[top]
        self.cand.slots[name] = f.slots[top]
        self.cand_free[name] = f.free(top)
        self.cand_host[name] = top
        self._region_free[r] = 1.0

    def _choose(self, kind: str, limit: float) -> tuple[int | None, ClusterSnapshot | None]:
        """The real router's choice of worker for the next chunk (see fleet.py for the candidates)."""
        f = self.fleet
        if f.exact:
            snap = f.full_snapshot(self.now)
            free = {f.ids[i]: f.free(i) for i in range(f.n) if f.live[i]}
            wid = self._current_router.choose(snap, free, kind, limit)
            return (None if wid is None else f.index[wid]), snap
        name = self._current_router.choose(self.cand, self.cand_free, kind, limit)
        return (None if name is None else self.cand_host[name]), None

    def _dispatch(self) -> None:
        f = self.fleet
        if not self.active or f.free_hosts == 0:
            return
        cleanest = min((self.intensity[r] for r in range(len(self.grid.regions)) if self._region_free[r] > 0 or f.exact),
                       default=UNBOUNDED)
        for job in list(self.active):
            if f.free_hosts == 0:
                break
            limit = self.thresholds.get(job.job_id, UNBOUNDED) if self.config.grid_aware else UNBOUNDED
            if job.has_supply():
                if limit < cleanest and not f.exact:
                    continue  # no free worker is clean enough: the router would say None
                if self._plan_job(job, limit) and limit == UNBOUNDED:
                    break  # blocked: no worker has a free slot at all
            if not job.has_supply() and job.inflight and self.settings.adaptive and limit == UNBOUNDED:
                if self.now - job.backup_pass >= self.config.backup_every_s:
                    job.backup_pass = self.now
                    self._backups(job)

    def _plan_job(self, job: Job, limit: float) -> bool:
        """Grant the job's chunks to the workers the real router picks, sizing new ranges with the
        real planner (what scheduling.grants.plan_job does, one grant at a time). True if blocked."""
        f = self.fleet
        kind = job.kind.value
        while job.has_supply():
            if f.free_hosts == 0:
                return True  # the router would find no worker (and this skips the call)
            i, snap = self._choose(kind, limit)
            if i is None:
                return True
            if job.waiting:
                order = heavy_or_light(snap, f.ids[i], kind) if snap is not None else "max"
                chunk = job.take_waiting(order)
            else:
                size = range_chunk_size(self.settings, worker_rate=f.rate[i], total_rate=f.total_rate[kind],
                                        remaining=job.remaining, first=i not in job.seen,
                                        units_total=job.units_total).units
                chunk = job.cut(size)
            self._grant(chunk, i, backup=False)
        return False

    def _grant(self, chunk: Chunk, i: int, *, backup: bool) -> None:
        f = self.fleet
        job = chunk.job
        lease = Lease(chunk, i, self.now, backup)
        chunk.leases.append(lease)
        if not backup:
            job.out[chunk.cid] = chunk
        self.stats.queued_now += 1
        self.stats.peak_queued = max(self.stats.peak_queued, self.stats.queued_now)
        if job.started_at is None:
            job.started_at = self.now
        f.held[i] += 1
        self.held_leases[i][lease] = None
        f.touch(i)
        if not f.exact:
            self._refresh_candidate(f.region[i])
        self.stats.dispatches += 1
        self.stats.backups += backup
        self.stats.note_dispatch(self.now)
        rate = f.info[i].rate(job.kind.value)
        lease.deadline = self.now + max(self.settings.lease_s, 3.0 * chunk.work_est / max(rate, 1.0))
        if not f.on[i] and not backup:  # granted to a host that left unnoticed: it expires (unless it returns)
            self._push(lease.deadline, EXPIRE, lease)
        self.queue[i].append(lease)
        if f.on[i]:
            self._start(i)

    def _release(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        i = lease.host
        self.held_leases[i].pop(lease, None)
        self.fleet.held[i] -= 1
        self.fleet.touch(i)
        if not self.fleet.exact:
            self._refresh_candidate(self.fleet.region[i])

    # --- stragglers ------------------------------------------------------------------------------
    def _backups(self, job: Job) -> None:
        """stragglers.backup_stragglers over the simulated leases: the real expected_finish,
        router and worth_a_backup decide; the latest expected finish goes first."""
        f = self.fleet
        if f.free_hosts == 0:
            return  # as backup_stragglers: no free slot anywhere, nothing to rank
        kind = job.kind.value
        candidates = []
        stale: list[Chunk] = []
        for chunk in job.inflight_chunks():
            lease = chunk.leases[0]
            if chunk.backed_up or chunk.work_est <= 0 and f.live[lease.host]:
                continue
            candidates.append(chunk)
            if lease.finish_key != f.record_version[lease.host]:
                stale.append(chunk)
        # The real expected_finish, called again only where the holder's record or liveness changed since
        # the last pass (its result depends on nothing else): most holders merged nothing in between.
        snap = ClusterSnapshot(self.now, {f.ids[h]: f.info[h] for h in {c.leases[0].host for c in stale} if f.live[h]},
                               {})
        for chunk in stale:
            lease = chunk.leases[0]
            lease.finish = expected_finish({"worker": f.ids[lease.host], "dispatched_at": repr(lease.at)},
                                           chunk.work_est, snap, kind)
            lease.finish_key = f.record_version[lease.host]
        # The latest expected finish first (ties in the order found), popped lazily: a pass grants at most
        # as many backups as there are free slots, so most passes never look past the first few.
        ranked = [(-c.leases[0].finish, k, c) for k, c in enumerate(candidates)]
        heapq.heapify(ranked)
        helper: int | None = None
        while ranked:
            negated, _, chunk = heapq.heappop(ranked)
            holder_finish = -negated
            if f.free_hosts == 0:
                break
            holder = chunk.leases[0].host
            if helper is None:  # the router's choice changes only after a grant
                helper, _ = self._choose(kind, UNBOUNDED)
            i = helper
            if i is None:
                break
            if i == holder:
                continue  # the real code offers every free worker but the holder; close enough here
            if not worth_a_backup(holder_finish, self.now + chunk.work_est / f.info[i].rate(kind), self.now,
                                  dispatched_at=chunk.leases[0].at):
                continue
            chunk.backed_up = True
            self._grant(chunk, i, backup=True)
            helper = None

    # --- results ---------------------------------------------------------------------------------
    def _merge(self, lease: Lease) -> None:
        f, chunk, job = self.fleet, lease.chunk, lease.chunk.job
        i = lease.host
        self.stats.merges += 1
        self.stats.note_merge(self.now)
        if f.quarantined[i]:  # collect ignores a quarantined worker's results
            self._release(lease)
            return
        if chunk.done or job.finished_at is not None:
            self.stats.duplicates += 1
            job.out.pop(chunk.cid, None)
            self._release(lease)
            self._dispatch()
            return
        if job.kind is JobKind.PI and not chunk.preview and not self._spot_check(lease):
            return
        self._accept(lease)
        self._dispatch()

    def _spot_check(self, lease: Lease) -> bool:
        """reputation.picks says how many of the 64 blocks to recompute; pi.pick_blocks picks them.
        A cheater fabricates ``cheat_blocks`` of them; a picked fabricated block is a catch."""
        f, chunk = self.fleet, lease.chunk
        i = lease.host
        alert = self.now - self.last_caught < reputation.ALERT_S
        picks = reputation.picks(JobKind.PI, f.raw[i].audits_passed, alert=alert)
        spec = ChunkSpec(chunk.job.job_id, chunk.cid, JobKind.PI, {"count": chunk.units}, chunk.units)
        blocks = pi_kind.pick_blocks(spec, picks, self._rng)
        self.stats.audit_units += pi_kind.block_samples(spec, blocks)
        if self.cheater[i]:
            n = pi_kind.block_count(chunk.units)
            fabricated = set(self._rng.sample(range(n), min(self.config.cheat_blocks, n)))
            if fabricated.intersection(blocks):
                self._catch(lease)
                return False
            self.stats.cheater_results_accepted += 1
        return True

    def _catch(self, lease: Lease) -> None:
        """consequences.catch: quarantine, reputation 0, other chunks taken back, the past revoked."""
        f, i = self.fleet, lease.host
        self.last_caught = self.now
        self.stats.caught[i] = self.now
        f.quarantined[i] = True
        f.set_live(i, False)
        f.update(i, evolve(f.raw[i], audits_passed=0, audits_failed=f.raw[i].audits_failed + 1,
                            quarantined="caught"))
        for held in [lease, *self.held_leases[i]]:
            if held.backup:
                self._release(held)
            else:
                self._requeue(held.chunk)
        for chunk, minted in self.results_log[i]:
            self.stats.reversed_micro += minted
            self.stats.cheater_minted_before_catch += minted
            job = chunk.job
            if job.finished_at is None:
                chunk.done = False
                job.units_done -= chunk.units
                self._requeue(chunk)
            else:
                job.suspect += 1
        self.results_log[i] = []
        self._dispatch()

    def _requeue(self, chunk: Chunk) -> None:
        if chunk.done or chunk.queued:
            return
        for lease in chunk.leases:
            self._release(lease)
        chunk.leases = []
        chunk.backed_up = False
        chunk.queued = True
        chunk.job.out.pop(chunk.cid, None)
        chunk.job.requeue(chunk)
        self.stats.requeues += 1

    def _accept(self, lease: Lease) -> None:
        f, chunk, job = self.fleet, lease.chunk, lease.chunk.job
        i = lease.host
        kind = job.kind.value
        holder = chunk.leases[0].host if chunk.leases else i
        holders = Holders.of(f.ids[holder], f.ids[chunk.leases[1].host] if len(chunk.leases) > 1 else "")
        claimed = lease.compute_s
        result = ChunkResult(job.job_id, chunk.cid, f.ids[i], f.regions[f.region[i]], 1, claimed,
                             claimed * f.cpu_limit[i] / 100.0, {}, "")
        elapsed, trusted = observed_elapsed(result, _Lease(lease.at, holders), f.slots[i], self.now)
        region = f.regions[f.region[i]]
        energy = accounting.chunk_energy_j(reported_j=None, cpu_s=result.cpu_s, elapsed_s=elapsed, cores=f.cores[i],
                                           watts_per_core=f.raw[i].watts_per_core)
        carbon = accounting.chunk_carbon(energy, region, self.signals, self.capacity,
                                         fallback_g_per_kwh=BLIND_FALLBACK_G_PER_KWH, blind_g_per_kwh=self.blind_g_per_kwh)
        work = float(chunk.units if job.kind is JobKind.PI else chunk.iterations)
        reward = rewards.chunk_reward(self.settings, work=work, speed=f.info[i].rate(kind),
                                      median_speed=self.median_speed, reliability=f.raw[i].reliability,
                                      saved_g=carbon.counterfactual_g - carbon.carbon_g,
                                      renewable_kwh=carbon.renewable_kwh)
        chunk.done = True
        if chunk.queued:  # a late result of a re-queued chunk: it is in the done-set now
            job.drop_queued(chunk)
        for other in chunk.leases:
            self._release(other)
        self._release(lease)
        job.out.pop(chunk.cid, None)
        job.units_done += chunk.units
        job.seen.add(i)
        self.stats.accepted += 1
        self.stats.minted_micro += reward.total
        self.stats.rewards.append(reward.total)
        self.stats.capped += reward.capped
        self.stats.carbon_g += carbon.carbon_g
        self.stats.counterfactual_g += carbon.counterfactual_g
        self.stats.energy_j += energy
        self.stats.useful_work += chunk.work
        self.results_log[i].append((chunk, reward.total))
        if self.cheater[i]:
            self.stats.cheater_minted += reward.total
        raw = f.raw[i]
        changes: dict[str, Any] = {"ok": raw.ok + 1}
        if job.kind is JobKind.PI and not chunk.preview:  # the spot check passed (reputation.passed)
            changes["audits_passed"] = raw.audits_passed + 1
        if trusted:
            perf_attr = "perf_pi" if kind == "pi" else "perf_mandelbrot"
            calibrated = raw.pi_samples_per_s if kind == "pi" else raw.mandelbrot_iters_per_s
            changes[perf_attr] = performance.updated(getattr(raw, perf_attr), calibrated, chunk.work, elapsed)
        f.update(i, evolve(raw, **changes))
        if chunk.preview:
            self._tiles(job)
        if job.units_done >= job.units_total and not job.waiting and job.finished_at is None:
            job.finished_at = self.now
            self.stats.jobs_done += 1
            self.active.remove(job)

    def _tiles(self, job: Job) -> None:
        """jobs/preview.plan_tiles_after_preview: the real tiling.plan_tiles on the preview's work map."""
        f = self.fleet
        snap = f.full_snapshot(self.now) if f.exact else None
        rates = [w.rate("mandelbrot") for w in snap.workers.values()] if snap else [f.total_rate["mandelbrot"] / max(
            sum(f.live), 1)]
        assert job.preview_work is not None and job.tile_truth is not None
        tiles = tiling.plan_tiles(job.job_id, job.params, job.preview_work, job.preview_stride,
                                  fleet_rate=sum(rates) / len(rates),
                                  slots=sum(snap.slots.values()) if snap else sum(f.slots[i] for i in range(f.n) if f.live[i]),
                                  target_s=self.settings.target_chunk_s)
        job.add_tiles(tiles, job.tile_truth)

    def _expire(self, lease: Lease) -> None:
        """The sweeper's requeue of an expired lease (lua/requeue.lua), with the holder's expiry counted."""
        chunk = lease.chunk
        if lease.released or chunk.done or lease.backup:
            return
        f, i = self.fleet, lease.host
        f.update(i, evolve(f.raw[i], expired=f.raw[i].expired + 1))
        self.stats.expiries += 1
        self._requeue(chunk)
        self._dispatch()

    # --- time shifting ---------------------------------------------------------------------------
    def _replan(self, _: Any) -> None:
        """shifting.plan (the real one) over one aggregate worker per region (its live processes at
        their mean speed), with the trace as the forecast, as benchmarks/carbon.py does."""
        f, g = self.fleet, self.grid
        procs = [0] * len(g.regions)
        rate = [0.0] * len(g.regions)
        for i in range(f.n):
            if f.live[i]:
                procs[f.region[i]] += f.cores[i]
                rate[f.region[i]] += f.rate[i] * f.cores[i]
        workers = [evolve(f.raw[0], worker_id=r, region=r, concurrency=procs[k], cores=procs[k],
                           pi_samples_per_s=rate[k] / procs[k], perf_pi=performance.Performance(0.0, 0.0, 0))
                   for k, r in enumerate(g.regions) if procs[k] > 0]
        demands = [Demand(j.job_id, j.kind.value, float(j.units_total - j.units_done), j.deadline) for j in self.active]
        if any(d.deadline_ts is not None for d in demands):
            hour0 = self.grid.hour(self.now)
            row = {r: k for k, r in enumerate(g.regions)}
            horizon = max(1, min(72, math.ceil((max(d.deadline_ts or 0 for d in demands) - self.now) / HOUR_S) + 1))
            self.thresholds = shifting_plan(
                demands, workers, lambda w, k: float(g.g_per_kwh[row[w], min(hour0 + k, g.g_per_kwh.shape[1] - 1)]),
                now=self.now, safety=self.settings.shift_safety,
                reserve_s=max(30.0, 2.0 * self.settings.target_chunk_s), horizon_h=horizon,
                headroom=self.settings.shift_headroom, margin=self.settings.shift_margin)
        else:
            self.thresholds = {}
        self.stats.replans += 1
        if self.stats.jobs_done < len(self.jobs):
            self._push(self.now + self.config.replan_s, REPLAN, None)
        self._dispatch()
