"""Carbon accounting: the energy and carbon of every accepted chunk, and the counterfactual.

* **Energy** of a chunk: what the volunteer measured with RAPL energy counters when its OS
  exposes them (``energy_j`` in the result, checked for plausibility), else its CPU time x the
  worker's per-core power figure (``HYDRA_WATTS_PER_CORE``, registered by each worker).
* **Carbon** = energy x the grid intensity of the worker's region at the time it ran; on-site
  renewables (the region's renewable share) supply that share of the energy carbon-free.
* **Counterfactual** = the same energy at the capacity-weighted mean intensity of the live
  workers: what carbon-blind, capacity-proportional routing would have emitted.

The maps passed to :func:`chunk_carbon` are keyed by where power is drawn: worker ids in the
control plane (a worker may report its own zone and solar share), region names in simulations.

Totals are kept per job (in the job hash) and overall (``keys.SUSTAINABILITY``), as floats of
grams and joules (``HINCRBYFLOAT``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import redis

from .. import keys
from .regions import RegionSignal

if TYPE_CHECKING:
    from ..lua import Deferred

J_PER_KWH = 3.6e6
MAX_WATTS_PER_CORE = 500.0  # anything above is not a CPU: the measurement is rejected
RAPL_PATH = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


def read_rapl_uj(path: Path = RAPL_PATH) -> int | None:
    """The package energy counter in microjoules, or None where the OS does not expose it."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def rapl_delta_j(before: int | None, after: int | None, *, path: Path = RAPL_PATH) -> float | None:
    """Joules between two counter reads (handling one wrap-around), or None."""
    if before is None or after is None:
        return None
    if after >= before:
        return (after - before) / 1e6
    try:
        wrap = int((path.parent / "max_energy_range_uj").read_text().strip())
    except (OSError, ValueError):
        return None
    return (wrap - before + after) / 1e6


@dataclass(frozen=True)
class ChunkCarbon:
    energy_j: float
    carbon_g: float
    counterfactual_g: float
    renewable_kwh: float


def chunk_energy_j(*, reported_j: float | None, cpu_s: float, elapsed_s: float, cores: int,
                   watts_per_core: float) -> float:
    """Measured energy if plausible for this worker, else CPU time x per-core power. Volunteers
    report these figures, so CPU time counts at most all cores for the elapsed time (which the
    caller bounds by the time since dispatch), and a measurement at most 500 W per core."""
    cpu_s = min(max(cpu_s, 0.0), max(elapsed_s, 0.0) * max(cores, 1))
    ceiling = max(elapsed_s, 0.0) * max(cores, 1) * MAX_WATTS_PER_CORE
    if reported_j is not None and 0 <= reported_j <= ceiling:
        return reported_j
    return cpu_s * watts_per_core


def effective_intensity(signal: RegionSignal | None, fallback_g_per_kwh: float) -> float:
    """The grid intensity a signal stands for, net of on-site renewables (``fallback`` if unknown)."""
    value = signal.g_co2_per_kwh if signal and signal.g_co2_per_kwh is not None else fallback_g_per_kwh
    return value * (1.0 - ((signal.renewable_share or 0.0) if signal else 0.0))


def chunk_carbon(energy_j: float, region: str, signals: Mapping[str, RegionSignal],
                 capacity: Mapping[str, float], *, fallback_g_per_kwh: float,
                 blind_g_per_kwh: float | None = None) -> ChunkCarbon:
    """Carbon where the chunk ran and under capacity-proportional routing (see module doc).
    ``blind_g_per_kwh``: that routing's intensity computed beforehand (else from ``capacity``)."""
    kwh = energy_j / J_PER_KWH

    def intensity(name: str) -> float:
        return effective_intensity(signals.get(name), fallback_g_per_kwh)

    total = sum(capacity.values())
    if blind_g_per_kwh is not None:
        blind = blind_g_per_kwh
    else:
        blind = (sum(intensity(r) * c for r, c in capacity.items()) / total) if total > 0 else intensity(region)
    share = (signals[region].renewable_share or 0.0) if region in signals else 0.0
    return ChunkCarbon(energy_j, kwh * intensity(region), kwh * blind, kwh * share)


def record(pipe: "redis.client.Pipeline | Deferred", job_id: str, c: ChunkCarbon) -> None:
    """Queue the chunk's totals on ``pipe`` (the caller executes it with its other writes)."""
    for key in (keys.job(job_id), keys.SUSTAINABILITY):
        pipe.hincrbyfloat(key, "energy_j", c.energy_j)
        pipe.hincrbyfloat(key, "carbon_g", c.carbon_g)
        pipe.hincrbyfloat(key, "counterfactual_g", c.counterfactual_g)
        pipe.hincrbyfloat(key, "renewable_kwh", c.renewable_kwh)


def totals(raw: Mapping[str, str]) -> dict[str, float]:
    """Energy and carbon totals from a job hash or the global hash, with the saving."""
    get = {k: float(raw.get(k, 0.0) or 0.0) for k in ("energy_j", "carbon_g", "counterfactual_g", "renewable_kwh")}
    saved = get["counterfactual_g"] - get["carbon_g"]
    return {"energy_kwh": get["energy_j"] / J_PER_KWH, "carbon_g": get["carbon_g"],
            "counterfactual_g": get["counterfactual_g"], "saved_g": saved,
            "saved_fraction": saved / get["counterfactual_g"] if get["counterfactual_g"] > 0 else 0.0,
            "renewable_kwh": get["renewable_kwh"]}

