"""A discrete-event simulator that drives Hydra's real scheduling, trust and reward code against
simulated volunteers (issue 15, item 4).

* :mod:`.population`: the simulated hosts (speeds, cores, CPU caps, regions, availability and churn,
  cheaters), drawn with numpy from a seed; where each figure comes from is said beside it.
* :mod:`.grid`: regions mapped to the zones of the real hourly carbon traces in
  ``../shared/data/carbon`` (read in place, never copied; :class:`CarbonDataMissing` when absent).
* :mod:`.fleet`: the hosts as the control plane sees them (``WorkerInfo`` records, windows, the
  per-region structures that let the real router choose without a fleet-wide scan).
* :mod:`.engine`: the event loop (heapq) and the control plane's decisions, each one a call into the
  real module: ``router.choose``, ``planner.range_chunk_size``, ``shifting.plan``,
  ``stragglers.expected_finish``/``worth_a_backup``, ``reputation.picks`` with ``pi.pick_blocks``,
  ``collect.observed_elapsed``, ``performance.updated``, ``cluster.capped`` (the confirmed view's cap)/``is_confirmed``,
  ``accounting.chunk_energy_j``/``chunk_carbon``, ``rewards.chunk_reward``, ``tiling.plan_tiles``.
* :mod:`.capacity`: the control-plane load a run demands and how many control processes and Redis
  instances that needs, from the measured per-chunk cost (parameters, defaults labelled).
* :mod:`.validation`: the 4-worker scenario of ``benchmarks/heterogeneous.py``, for comparing the
  simulator with the real cluster.

``benchmarks/simulate.py`` is the command line.
"""

from __future__ import annotations

from ..errors import HydraError


class SimulationError(HydraError):
    """A simulation could not be set up or run (bad scenario, missing data)."""


class CarbonDataMissing(SimulationError):
    """The shared carbon traces are not where the simulator looks for them; point ``--trace`` at
    ``em2022_hourly_lca_25zones.csv`` (shared/data/carbon/derived) or run without carbon."""


__all__ = ["CarbonDataMissing", "SimulationError"]
