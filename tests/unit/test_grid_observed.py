"""Forecasts from the intensities the provider chain has seen (grid/observed.py), kept in a real Redis."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis

from hydra_tasks import keys
from hydra_tasks.grid import EmbeddedTableProvider, GridError, ProviderChain, Reading
from hydra_tasks.grid.configure import build_chain
from hydra_tasks.grid.observed import KEEP_DAYS, ObservedForecaster, ObservedIntensities
from hydra_tasks.models import WorkerState
from hydra_tasks.scheduling.router import router_for
from hydra_tasks.settings import Settings
from hydra_tasks.worker.registry import WorkerInfo

START = datetime(2026, 3, 2, tzinfo=timezone.utc)


def daily(hour: int, base: float = 300.0) -> float:
    """A grid with a solar dip at midday: base +- 100 over the day."""
    return base + 100.0 * math.cos(2 * math.pi * (hour % 24) / 24)


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for key in client.scan_iter(keys.grid_observed("*")):
        client.delete(key)
    return client


def record_days(history: ObservedIntensities, zone: str, hours: int, base: float = 300.0) -> datetime:
    """``hours`` hourly readings from START (a reading 10 minutes into each hour); the last one's time."""
    for h in range(hours):
        history.record(Reading(zone, daily(h, base), START + timedelta(hours=h, minutes=10), "electricity-maps"))
    return START + timedelta(hours=hours - 1, minutes=30)


def test_a_forecast_from_three_recorded_days_follows_the_day_and_only_the_past(client: redis.Redis) -> None:
    history = ObservedIntensities(client)
    now = record_days(history, "DE", 72)
    forecaster = ObservedForecaster(history)
    got = forecaster.forecast("DE", 24, at=now)
    assert [r.at for r in got] == [START + timedelta(hours=71 + k) for k in range(24)]
    assert all(r.source.startswith("observed:seasonal") and r.zone == "DE" for r in got)
    for k, reading in enumerate(got):
        assert reading.g_co2_per_kwh == pytest.approx(daily(71 + k), abs=0.01)  # the shape, hour by hour
    assert min(got, key=lambda r: r.g_co2_per_kwh).at.hour == 12  # the midday dip is where to wait for
    # what is recorded after the hour asked changes nothing
    history.record(Reading("DE", 5000.0, now + timedelta(hours=2), "electricity-maps"))
    assert [r.g_co2_per_kwh for r in forecaster.forecast("DE", 24, at=now)] == [r.g_co2_per_kwh for r in got]


def test_gaps_take_the_previous_hour_and_a_dirtier_today_lifts_the_forecast(client: redis.Redis) -> None:
    history = ObservedIntensities(client)
    now = record_days(history, "PL", 72)
    client.hdel(keys.grid_observed("PL"), str(int((START + timedelta(hours=60)).timestamp())))  # an hour missed
    history.record(Reading("PL", daily(71) + 200.0, now, "electricity-maps"))  # today is dirtier than usual
    got = [r.g_co2_per_kwh for r in ObservedForecaster(history).forecast("PL", 6, at=now)]
    assert got[0] == pytest.approx(daily(71) + 200.0)
    assert all(g > daily(71 + k) + 150.0 for k, g in enumerate(got))  # the departure fades over a day, not an hour


def test_too_little_history_is_refused_and_the_chain_falls_back_to_the_flat_table(client: redis.Redis) -> None:
    history = ObservedIntensities(client)
    now = record_days(history, "FR", 10)
    with pytest.raises(GridError, match="only 10 hours of FR intensities recorded"):
        ObservedForecaster(history).forecast("FR", 6, at=now)
    chain = ProviderChain([ObservedForecaster(history), EmbeddedTableProvider()])
    flat = chain.forecast("FR", 6, at=now)
    assert len({r.g_co2_per_kwh for r in flat}) == 1 and flat[0].source.startswith("embedded-table")
    assert chain.failures == []  # gathering history is not a provider failure (none shown on the dashboard)
    # nor is a forecast-only provider asked for a current reading: the chain goes on to the table
    assert chain.intensity("FR").source.startswith("embedded-table") and chain.failures == []
    with pytest.raises(GridError, match="observed: only 10 hours"):  # but it is named when nothing forecasts
        ProviderChain([ObservedForecaster(history)]).forecast("FR", 6, at=now)
    # a history that is not kept anywhere forecasts nothing either
    with pytest.raises(GridError, match="only 0 hours"):
        ObservedForecaster(ObservedIntensities()).forecast("FR", 6, at=now)


def test_only_the_last_days_are_kept(client: redis.Redis) -> None:
    history = ObservedIntensities(client)
    record_days(history, "ES", (KEEP_DAYS + 2) * 24)
    kept = sorted(int(h) for h in client.hkeys(keys.grid_observed("ES")))
    assert len(kept) <= (KEEP_DAYS + 1) * 24
    assert kept[-1] - kept[0] >= (KEEP_DAYS - 1) * 24 * 3600  # still more than a week to forecast from


def test_the_chain_records_what_it_reads_from_a_trace_but_never_the_tables_means(client: redis.Redis,
                                                                                tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    rows = ["datetime_utc,NL"] + [f"{(START + timedelta(hours=h)).isoformat()},{daily(h, 400):.1f}" for h in range(48)]
    trace.write_text("\n".join(rows) + "\n")
    observed = ObservedIntensities(client)
    chain = build_chain(Settings().with_(carbon_trace=str(trace)), observed=observed)
    for h in range(30):
        chain.intensity("NL", START + timedelta(hours=h, minutes=5))
    chain.intensity("SE-SE3", START)  # not in the trace: the table answers
    assert client.hlen(keys.grid_observed("NL")) == 30
    assert float(client.hget(keys.grid_observed("NL"), str(int(START.timestamp())))) == pytest.approx(daily(0, 400))
    assert not client.exists(keys.grid_observed("SE-SE3"))
    # without the trace, the same history forecasts NL before the table does
    plain = build_chain(Settings(), observed=observed)
    got = plain.forecast("NL", 3, at=START + timedelta(hours=29))
    assert got[0].source.startswith("observed:seasonal")
    assert [r.g_co2_per_kwh for r in got] == pytest.approx([daily(29 + k, 400) for k in range(3)], abs=0.5)


def test_the_routers_hourly_forecast_for_time_shifting_comes_from_the_intensities_it_kept(client: redis.Redis) -> None:
    settings = Settings().with_(grid_aware=True, regions="eu-central=DE")
    now = record_days(ObservedIntensities(client), "DE", 72)
    router = router_for(settings, client)
    assert router.hourly is not None
    worker = WorkerInfo(worker_id="w1", region="eu-central", host="h", pid=1, cores=1, concurrency=1,
                        pi_samples_per_s=1e8, mandelbrot_iters_per_s=1e8, state=WorkerState.ONLINE,
                        started_at=0.0, last_seen=0.0)
    values = router.hourly(worker, 24, now.timestamp())
    assert values == pytest.approx([daily(71 + k) for k in range(24)], abs=0.01)
