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
