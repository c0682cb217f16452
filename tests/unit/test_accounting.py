"""Carbon accounting: energy per chunk, carbon where it ran, and the carbon-blind counterfactual."""

from __future__ import annotations

import pytest

from hydra_tasks.grid.accounting import chunk_carbon, chunk_energy_j, totals
from hydra_tasks.grid.regions import RegionSignal

SIGNALS = {"clean": RegionSignal(25.0, None, None, "t"), "dirty": RegionSignal(625.0, None, None, "t"),
           "solar": RegionSignal(625.0, None, 0.6, "t")}


def test_energy_is_cpu_time_times_per_core_power_unless_a_plausible_measurement_exists() -> None:
    assert chunk_energy_j(reported_j=None, cpu_s=2.0, elapsed_s=2.0, cores=4, watts_per_core=15) == 30.0
    assert chunk_energy_j(reported_j=41.5, cpu_s=2.0, elapsed_s=2.0, cores=4, watts_per_core=15) == 41.5
    # 10 kJ in 2 s on 4 cores is not a CPU: fall back to the estimate.
    assert chunk_energy_j(reported_j=1e4, cpu_s=2.0, elapsed_s=2.0, cores=4, watts_per_core=15) == 30.0


def test_a_chunk_in_a_clean_region_saves_against_capacity_proportional_routing() -> None:
    c = chunk_carbon(3.6e6, "clean", SIGNALS, {"clean": 1.0, "dirty": 1.0}, fallback_g_per_kwh=475)
    assert c.carbon_g == pytest.approx(25.0)          # 1 kWh at 25 g/kWh
    assert c.counterfactual_g == pytest.approx(325.0)  # half the capacity clean, half dirty
    t = totals({"energy_j": "3600000", "carbon_g": "25", "counterfactual_g": "325", "renewable_kwh": "0"})
    assert t["saved_g"] == pytest.approx(300.0) and t["saved_fraction"] == pytest.approx(300 / 325)


def test_on_site_renewables_supply_their_share_carbon_free() -> None:
    c = chunk_carbon(3.6e6, "solar", SIGNALS, {"solar": 1.0}, fallback_g_per_kwh=475)
    assert c.carbon_g == pytest.approx(625.0 * 0.4) and c.renewable_kwh == pytest.approx(0.6)


def test_an_unknown_region_is_charged_the_fallback_intensity() -> None:
    c = chunk_carbon(3.6e6, "nowhere", SIGNALS, {"nowhere": 1.0}, fallback_g_per_kwh=475)
    assert c.carbon_g == pytest.approx(475.0)
