"""Volunteer controls, as BOINC offers them: a CPU-use cap and pausing on battery.

* ``--cpu-limit 50`` (``HYDRA_CPU_LIMIT``): the worker computes at most half of the time. A
  chunk is computed in slices of about ``SLICE_S``; after a slice that took *t* seconds of
  compute the worker rests *t*·(100/limit − 1) seconds, so its CPU use is the limit on average.
  Slices never change a result: π sub-ranges and Mandelbrot row bands add up exactly.
* ``HYDRA_PAUSE_ON_BATTERY`` (default on): while the machine runs on battery the worker is
  *paused*: it says so in the registry, gets no new chunks, and declines chunks it still receives.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import psutil

SLICE_S = 0.2       # compute time per slice under a CPU cap
FIRST_SLICE = 1     # first slice: one unit of the caller's choosing (a row, a block of samples)


def on_battery() -> bool:
    """True if the OS reports a battery that is discharging (no battery or unknown: False)."""
    try:
        battery = psutil.sensors_battery()
    except (NotImplementedError, OSError):  # platforms without battery support
        return False
    return battery is not None and battery.power_plugged is False


@dataclass
class Throttle:
    """Duty-cycle a computation to ``cpu_limit`` percent of wall time."""

    cpu_limit: float = 100.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    busy_s: float = 0.0
    rested_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.cpu_limit <= 100:
            raise ValueError(f"cpu_limit must be in (0, 100]; got {self.cpu_limit}")

    @property
    def unlimited(self) -> bool:
        return self.cpu_limit >= 100

    def run_sliced(self, total: int, work: Callable[[int, int], None], *, first: int = FIRST_SLICE) -> None:
        """Call ``work(offset, count)`` over ``[0, total)`` in slices of about SLICE_S of compute,
        resting after each slice so that compute is ``cpu_limit`` percent of the time."""
        if self.unlimited:
            work(0, total)
            return
        offset, count = 0, max(1, min(first, total))
        rest_per_busy = 100.0 / self.cpu_limit - 1.0
        while offset < total:
            count = min(count, total - offset)
            t0 = time.perf_counter()
            work(offset, count)
            took = time.perf_counter() - t0
            offset += count
            self.busy_s += took
            self.sleep(took * rest_per_busy)
            self.rested_s += took * rest_per_busy
            count = max(1, int(count * SLICE_S / max(took, 1e-6)))  # aim the next slice at SLICE_S
