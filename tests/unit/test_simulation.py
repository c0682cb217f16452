"""The discrete-event simulator (hydra_tasks/simulation): small scenarios, no Redis, a few seconds."""

from __future__ import annotations

import numpy as np

from hydra_tasks.simulation import scenario as sim

SMALL = dict(hosts=50, hours=3.0, jobs=4, arrival_h=0.5, load=0.3, deadline_share=0.0, target_chunk_s=300.0,
             min_chunk_s=60.0, lease_s=120.0, replan_s=120.0, backup_every_s=30.0, reference_every_s=600.0,
             trace="", cheater_share=0.0)


def run(**changes: object) -> tuple[sim.Outcome, sim.RunResult]:
    aware = bool(changes.pop("aware", True))
    out = sim.build(sim.Scenario(**{**SMALL, **changes}))  # type: ignore[arg-type]
    return out, sim.run(out, grid_aware=aware)


def test_all_work_completes_no_sooner_than_the_ideal() -> None:
    out, result = run(seed=3)
    assert result.unfinished == 0
    assert all(j.units_done == j.units_total for j in result.jobs)
    assert result.makespan_s is not None and result.makespan_s >= out.ideal_s > 0


def test_tokens_minted_are_the_sum_of_the_accepted_rewards() -> None:
    _, result = run(seed=4, cheater_share=0.1)
    st = result.stats
    assert st.minted_micro > 0 and len(st.rewards) == st.accepted > 0
    assert st.minted_micro == sum(st.rewards)


def test_cheaters_are_caught_and_lose_what_they_were_paid() -> None:
    out, result = run(seed=5, cheater_share=0.2, cheat_blocks=64)
    st = result.stats
    cheaters = set(np.flatnonzero(out.pop.cheater).tolist())
    assert st.caught, "no cheater was caught"
    assert set(st.caught) <= cheaters, "an honest host was caught"
    assert st.cheater_minted == st.cheater_minted_before_catch  # every token paid to a caught cheater reversed
    assert result.unfinished == 0  # revoked work was recomputed by others


def test_carbon_aware_routing_emits_less_than_carbon_blind_when_clean_capacity_suffices() -> None:
    carbon = {}
    for aware in (True, False):
        out = sim.build(sim.Scenario(**{**SMALL, "seed": 6, "churn": False, "load": 0.1}))  # type: ignore[arg-type]
        out.grid.g_per_kwh[:] = np.arange(len(out.grid.regions))[:, None] * 100.0 + 10.0  # region 0 cleanest
        carbon[aware] = sim.run(out, grid_aware=aware).stats.carbon_g
    assert carbon[True] < 0.9 * carbon[False]


def test_a_seed_gives_the_same_run() -> None:
    a, b = run(seed=7, cheater_share=0.1)[1].stats, run(seed=7, cheater_share=0.1)[1].stats
    assert (a.events, a.dispatches, a.minted_micro, a.carbon_g, sorted(a.caught)) == \
           (b.events, b.dispatches, b.minted_micro, b.carbon_g, sorted(b.caught))


def test_the_fleets_incremental_views_equal_the_real_code_recomputed() -> None:
    """The engine keeps each host's confirmed view and each lease's expected finish between events
    (refreshed only where something they depend on changed); at the end of a churning run they must
    equal what cluster.capped and stragglers.expected_finish compute afresh."""
    from hydra_tasks.scheduling.cluster import ClusterSnapshot, capped
    from hydra_tasks.scheduling.stragglers import expected_finish
    from hydra_tasks.simulation import population
    from hydra_tasks.simulation.engine import Engine, EngineConfig
    from hydra_tasks.simulation.fleet import Fleet
    from hydra_tasks.simulation.model import Job
    from hydra_tasks.models import JobKind

    s = sim.Scenario(**{**SMALL, "hosts": 200, "seed": 9, "backup_every_s": 10.0, "load": 0.9})  # type: ignore[arg-type]
    out = sim.build(s)
    pop = out.pop
    speed = pop.proc_speed().tolist()
    fleet = Fleet(s.settings(grid_aware=True), region=pop.region.tolist(), regions=pop.regions,
                  cores=pop.cores.tolist(), pi_speed=speed, mandel_speed=[v * population.MANDEL_PER_PI for v in speed],
                  pi_calibration=pop.core_speed.tolist(),
                  mandel_calibration=(pop.core_speed * population.MANDEL_PER_PI).tolist(),
                  cpu_limit=pop.cpu_limit.tolist(), exact=False)
    specs, _ = sim.make_jobs(s, pop, np.random.default_rng(s.seed + 7))
    jobs = [Job(f"j{k}", JobKind.PI, size, arrival, deadline) for k, (arrival, size, deadline) in enumerate(specs)]
    events = sorted([(float(t), int(h), True) for t, h in zip(pop.on_start, pop.on_host)]
                    + [(float(t), int(h), False) for t, h in zip(pop.on_end, pop.on_host) if t < pop.horizon_s])
    engine = Engine(fleet.settings, fleet, out.grid, EngineConfig(horizon_s=pop.horizon_s, backup_every_s=10.0,
                                                                  reference_every_s=600.0, seed=9),
                    jobs, pop.cheater.tolist(), events)
    engine.run(until=2400.0, stop_when_done=False)  # mid-run: jobs in their tails, hosts coming and going
    assert engine.stats.backups > 0 and fleet.reference["pi"] < float("inf")
    checked = 0
    for i in range(fleet.n):
        if fleet.live[i]:
            assert fleet.info[i] == capped(fleet.raw[i], fleet.reference), f"host {i}'s view is stale"
            checked += 1
    assert checked > 20
    snap = ClusterSnapshot(engine.now, {fleet.ids[i]: fleet.info[i] for i in range(fleet.n) if fleet.live[i]}, {})
    kept = 0
    for job in jobs:
        for chunk in job.inflight_chunks():
            lease = chunk.leases[0]
            if lease.finish_key == fleet.record_version[lease.host]:  # the engine would reuse it
                fresh = expected_finish({"worker": fleet.ids[lease.host], "dispatched_at": repr(lease.at)},
                                        chunk.work_est, snap, "pi")
                assert lease.finish == fresh
                kept += 1
    assert kept > 0


def test_the_control_plane_estimate_bounds_the_fleet_views() -> None:
    """Each process reads the fleet at most once per HYDRA_FLEET_VIEW_S, and a slow read at most once per
    REUSE_FACTOR times its duration: the views' load stops growing with the fleet."""
    from collections import Counter

    from hydra_tasks.scheduling.cluster import REUSE_FACTOR
    from hydra_tasks.simulation.capacity import ControlCost, load

    bins = Counter({t: 50 for t in range(600)})  # 50 dispatches and 50 merges a second for 10 minutes
    cost = ControlCost()
    small = load(bins, bins, span_s=600.0, live_workers_peak=1_000, heartbeat_s=30.0, cost=cost)
    large = load(bins, bins, span_s=600.0, live_workers_peak=1_000_000, heartbeat_s=30.0, cost=cost)
    assert small.fleet_view_commands_per_s == small.processes * 1_000 / cost.fleet_view_s
    per_process_cap = 1.0 / (REUSE_FACTOR * cost.read_s_per_record)
    assert large.fleet_view_commands_per_s == large.processes * per_process_cap
    # a process keeps 1 - 1/REUSE_FACTOR of its time for chunks: 50 chunks/s at 50 per process needs 2
    assert small.processes == 2
    assert large.redis_commands_per_s > small.redis_commands_per_s
