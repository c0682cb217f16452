"""The reward rule: how many micro-tokens an accepted chunk earns.

The compute unit is work done, not wall time: 10^9 π samples, or 10^9 Mandelbrot iterations of
the plain escape-time algorithm (the sum of the tile's verified counts, so the kernel's shortcuts
neither cost nor earn the volunteer anything). With ``r`` = ``HYDRA_BASE_TOKEN_RATE`` per unit::

    base        = r x work / 10^9
    performance = base x (1 + (HYDRA_PERFORMANCE_MULTIPLIER - 1) x clamp(speed / median speed - 1, 0, 1))
    reliability = performance x HYDRA_RELIABILITY_BONUS x reliability      (reliability in 0..1)
    carbon      = HYDRA_CARBON_BONUS_RATE x kg CO2 saved vs the carbon-blind counterfactual (>= 0)
    renewable   = HYDRA_RENEWABLE_BONUS_RATE x kWh from on-site renewables
    bonus       = min(carbon + renewable, performance)
    reward      = min(HYDRA_MAX_TOKENS_PER_CHUNK, performance + reliability + bonus)

The carbon and renewable bonuses rest on figures volunteers report (CPU time, energy, on-site
renewables), so together they can at most double the pay for the verified work.

Each term is rounded to whole micro-tokens (floats only enter through measured speeds and
carbon), then summed as integers, so the total is exact. Speed is the worker's
measured rate for the kind; the multiplier reaches its full value at twice the fleet's median.

Worked example (README): 3·10^9 π samples at rate 1 token, multiplier 1.5, a worker 1.4x the
median, reliability 0.98 with bonus 0.1, 2 g CO2 saved at 0.5 token/kg, 0.0001 renewable kWh at
0.2 token/kWh: 3.0 -> 3.6 (x1.2) + 0.3528 + min(0.001 + 0.00002, 3.6) = 3.95382 tokens = 3,953,820 micro.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..settings import Settings

COMPUTE_UNIT = 1e9


@dataclass(frozen=True)
class Reward:
    """Micro-tokens, by term; ``total`` is what is minted."""

    base: int
    performance: int
    reliability: int
    carbon: int
    renewable: int
    total: int
    capped: bool

    def to_json(self) -> dict[str, int | bool]:
        return asdict(self)


def _micro(value: float) -> int:
    return max(0, round(value)) if math.isfinite(value) else 0


def chunk_reward(settings: Settings, *, work: float, speed: float, median_speed: float, reliability: float,
                 saved_g: float, renewable_kwh: float) -> Reward:
    """The reward for one accepted chunk (see the module docstring); zero with incentives off."""
    if not settings.token_incentives or work <= 0:
        return Reward(0, 0, 0, 0, 0, 0, False)
    base = _micro(settings.base_token_rate_micro * work / COMPUTE_UNIT)
    ahead = min(max(speed / median_speed - 1.0, 0.0), 1.0) if median_speed > 0 else 0.0
    performance = _micro(base * (1.0 + (settings.performance_multiplier - 1.0) * ahead))
    reliable = _micro(performance * settings.reliability_bonus * min(max(reliability, 0.0), 1.0))
    carbon = _micro(settings.carbon_bonus_rate_micro * max(saved_g, 0.0) / 1000.0)
    renewable = _micro(settings.renewable_bonus_rate_micro * max(renewable_kwh, 0.0))
    bonus = min(carbon + renewable, performance)  # self-reported inputs: at most the work's own pay
    total = performance + reliable + bonus
    cap = settings.max_tokens_per_chunk_micro
    return Reward(base, performance, reliable, carbon, renewable, min(total, cap), total > cap)
