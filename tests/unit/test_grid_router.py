"""Grid-aware routing: clean regions first, without exceeding their capacity or starving the job."""

from __future__ import annotations

import pytest

from hydra_tasks.errors import ConfigError
from hydra_tasks.grid.regions import RegionSignal, parse_regions, region_signals
from hydra_tasks.grid.table import EmbeddedTableProvider
from hydra_tasks.models import WorkerState
from hydra_tasks.scheduling.cluster import ClusterSnapshot
from hydra_tasks.scheduling.router import CapacityRouter, GridAwareRouter, router_for
from hydra_tasks.settings import Settings
from hydra_tasks.worker.registry import WorkerInfo


def snapshot(**workers: tuple[str, float]) -> ClusterSnapshot:
    infos = {name: WorkerInfo(worker_id=name, region=region, host="h", pid=1, cores=1, concurrency=1,
                              pi_samples_per_s=rate, mandelbrot_iters_per_s=rate, state=WorkerState.ONLINE,
                              started_at=0.0, last_seen=0.0)
             for name, (region, rate) in workers.items()}
    return ClusterSnapshot(taken_at=0.0, workers=infos, slots={n: 2 for n in infos})


SIGNALS = {
    "eu-north": RegionSignal(23.0, 0.10, None, "table"),
    "eu-central": RegionSignal(341.0, 0.30, None, "table"),
    "us-east": RegionSignal(403.0, 0.08, None, "table"),
}


def route_all(router: GridAwareRouter | CapacityRouter, snap: ClusterSnapshot) -> list[str]:
    free = dict(snap.slots)
    order = []
    while (worker := router.choose(snap, free, "pi")) is not None:
        order.append(snap.workers[worker].region)
        free[worker] -= 1
    return order


def test_the_cleanest_region_is_filled_first_then_the_others_still_get_work() -> None:
    snap = snapshot(a=("us-east", 5e8), b=("eu-north", 1e8), c=("eu-central", 3e8))
    order = route_all(GridAwareRouter.by_region(SIGNALS, carbon_weight=1.0, cost_weight=0.0, renewable_weight=0.0), snap)
    assert order == ["eu-north"] * 2 + ["eu-central"] * 2 + ["us-east"] * 2  # every slot used, clean first


def test_the_weights_decide_between_carbon_and_price() -> None:
    snap = snapshot(a=("us-east", 1e8), c=("eu-central", 1e8))
    cheap = GridAwareRouter.by_region(SIGNALS, carbon_weight=0.1, cost_weight=0.9, renewable_weight=0.0)
    clean = GridAwareRouter.by_region(SIGNALS, carbon_weight=0.9, cost_weight=0.1, renewable_weight=0.0)
    assert route_all(cheap, snap)[0] == "us-east" and route_all(clean, snap)[0] == "eu-central"


def test_on_site_renewables_count_with_the_renewable_weight() -> None:
    signals = {**SIGNALS, "home": RegionSignal(403.0, None, 0.9, "worker")}
    snap = snapshot(a=("us-east", 1e8), h=("home", 1e8))
    router = GridAwareRouter.by_region(signals, carbon_weight=0.5, cost_weight=0.0, renewable_weight=0.5)
    assert route_all(router, snap)[0] == "home"


def test_grid_aware_off_means_capacity_proportional_routing() -> None:
    assert isinstance(router_for(Settings().with_(grid_aware=False)), CapacityRouter)
    assert isinstance(router_for(Settings()), GridAwareRouter)


def test_regions_come_with_defaults_and_can_be_configured() -> None:
    regions = parse_regions("home-lab=FR:0.2:0.6,eu-west=SE")
    assert regions["home-lab"].zone == "FR" and regions["home-lab"].renewable_share == 0.6
    assert regions["eu-west"].zone == "SE" and regions["us-west"].zone == "US-CAL-CISO"
    continents = {r.zone.split("-")[0] for r in regions.values() if r.zone}
    assert {"FR", "US", "IN", "AU", "BR", "JP"} <= continents
    for bad in ("home", "home=fr", "home=FR:-1", "home=FR:0.1:2", "home=FR:x"):
        with pytest.raises(ConfigError):
            parse_regions(bad)


def test_signals_use_the_table_and_leave_unknown_zones_neutral() -> None:
    regions = parse_regions("")
    signals = region_signals(regions, {"eu-north", "local", "nowhere"}, EmbeddedTableProvider())
    assert signals["eu-north"].g_co2_per_kwh == 23.0
    assert signals["local"].g_co2_per_kwh is None and signals["nowhere"].g_co2_per_kwh is None
