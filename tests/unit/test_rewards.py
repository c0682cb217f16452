"""The reward rule: integer micro-tokens from work done, bonuses, and the per-chunk cap."""

from __future__ import annotations

from hydra_tasks.ledger.rewards import chunk_reward
from hydra_tasks.settings import Settings

EXAMPLE = dict(work=3e9, speed=1.4e9, median_speed=1e9, reliability=0.98, saved_g=2.0, renewable_kwh=0.0001)


def test_the_documented_worked_example() -> None:
    settings = Settings().with_(base_token_rate_micro=1_000_000, performance_multiplier=1.5, reliability_bonus=0.1,
                                carbon_bonus_rate_micro=500_000, renewable_bonus_rate_micro=200_000)
    reward = chunk_reward(settings, **EXAMPLE)
    assert (reward.base, reward.performance, reward.reliability, reward.carbon, reward.renewable) == \
        (3_000_000, 3_600_000, 352_800, 1_000, 20)
    assert reward.total == 3_953_820 and not reward.capped
    assert all(type(v) is int for k, v in reward.to_json().items() if k != "capped")


def test_the_unit_is_work_not_time_and_slow_workers_are_not_penalised() -> None:
    settings = Settings().with_(performance_multiplier=2.0, reliability_bonus=0.0, carbon_bonus_rate_micro=0,
                                renewable_bonus_rate_micro=0)
    slow = chunk_reward(settings, **{**EXAMPLE, "speed": 0.2e9})
    median = chunk_reward(settings, **{**EXAMPLE, "speed": 1e9})
    fast = chunk_reward(settings, **{**EXAMPLE, "speed": 5e9})
    assert slow.total == median.total == 3_000_000  # same work, same pay
    assert fast.total == 6_000_000  # the multiplier in full from twice the median
    assert chunk_reward(settings, **{**EXAMPLE, "work": 6e9, "speed": 1e9}).total == 6_000_000


def test_the_cap_and_the_switch() -> None:
    capped = chunk_reward(Settings().with_(max_tokens_per_chunk_micro=1_000_000), **EXAMPLE)
    assert capped.total == 1_000_000 and capped.capped
    off = chunk_reward(Settings().with_(token_incentives=False), **EXAMPLE)
    assert off.total == 0
    assert chunk_reward(Settings(), **{**EXAMPLE, "work": 0}).total == 0
    assert chunk_reward(Settings(), **{**EXAMPLE, "saved_g": -50.0}).carbon == 0  # dirtier than blind: no bonus


def test_bonuses_on_reported_figures_can_at_most_double_the_pay_for_the_work() -> None:
    greedy = chunk_reward(Settings().with_(reliability_bonus=0.0), **{**EXAMPLE, "saved_g": 1e12,
                                                                       "renewable_kwh": 1e9})
    assert greedy.total == 2 * greedy.performance == 6_000_000


def test_reported_cpu_time_cannot_exceed_all_cores_for_the_elapsed_time() -> None:
    from hydra_tasks.grid.accounting import chunk_energy_j

    honest = chunk_energy_j(reported_j=None, cpu_s=2.0, elapsed_s=2.0, cores=4, watts_per_core=15.0)
    inflated = chunk_energy_j(reported_j=None, cpu_s=1e9, elapsed_s=2.0, cores=4, watts_per_core=15.0)
    assert honest == 30.0 and inflated == 2.0 * 4 * 15.0
    assert chunk_energy_j(reported_j=1e9, cpu_s=1e9, elapsed_s=2.0, cores=4, watts_per_core=15.0) == 120.0
