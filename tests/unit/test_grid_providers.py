"""Carbon providers that need no network: embedded table, trace replay, and the provider chain."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hydra_tasks.errors import HydraError
from hydra_tasks.grid import GridError, Reading
from hydra_tasks.grid.chain import ProviderChain
from hydra_tasks.grid.table import ATTRIBUTION, EmbeddedTableProvider
from hydra_tasks.grid.trace import TraceProvider

CARBON = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "carbon"
WEEK = CARBON / "derived" / "em2022-06-13_week_hourly_lca_25zones.csv"
needs_week = pytest.mark.skipif(not WEEK.is_file(), reason=f"shared carbon data not found at {WEEK}")
UTC = timezone.utc


def csv_value(path: Path, stamp: str, zone: str) -> float:
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["datetime_utc"] == stamp:
                return float(row[zone])
    raise AssertionError(f"{stamp} not in {path}")


# --- embedded table ------------------------------------------------------------------------
@pytest.mark.parametrize(("zone", "expected"), [("FR", 33.0), ("DE", 341.0), ("GB", 175.0), ("US-CAL-CISO", 229.0)])
def test_table_gives_2024_annual_means(zone: str, expected: float) -> None:
    reading = EmbeddedTableProvider().intensity(zone)
    assert reading.g_co2_per_kwh == expected
    assert reading.zone == zone and reading.at.tzinfo is not None


def test_table_credits_its_sources() -> None:
    assert "Electricity Maps" in ATTRIBUTION and "Ember" in ATTRIBUTION and "co2.js" in ATTRIBUTION


def test_table_answers_a_sub_zone_with_its_country() -> None:
    reading = EmbeddedTableProvider().intensity("SE-SE3")
    assert reading.g_co2_per_kwh == 23.0 and reading.zone == "SE-SE3" and ":SE:" in reading.source


def test_table_refuses_an_unknown_zone_with_the_known_ones_listed() -> None:
    with pytest.raises(GridError, match="not in the embedded carbon table.*FR") as info:
        EmbeddedTableProvider().intensity("XX")
    assert isinstance(info.value, HydraError)


def test_reading_refuses_negative_non_finite_and_naive_values() -> None:
    now = datetime.now(UTC)
    with pytest.raises(GridError):
        Reading("FR", -1.0, now, "test")
    with pytest.raises(GridError):
        Reading("FR", float("nan"), now, "test")
    with pytest.raises(GridError, match="no time zone"):
        Reading("FR", 1.0, datetime(2024, 1, 1), "test")


# --- trace ---------------------------------------------------------------------------------
@needs_week
def test_trace_returns_the_value_of_the_hour_containing_the_time() -> None:
    trace = TraceProvider(WEEK)
    reading = trace.intensity("DE", datetime(2022, 6, 15, 13, 42, tzinfo=UTC))
    assert reading.g_co2_per_kwh == csv_value(WEEK, "2022-06-15T13:00:00Z", "DE")
    assert trace.hours == 168 and len(trace.zones) == 25


@needs_week
def test_trace_wraps_a_time_outside_it_by_hour_of_year() -> None:
    trace = TraceProvider(WEEK)
    # Same calendar hour in 2025 replays 2022-06-15 13:00.
    later = trace.intensity("GB", datetime(2025, 6, 15, 13, 5, tzinfo=UTC))
    assert later.g_co2_per_kwh == csv_value(WEEK, "2022-06-15T13:00:00Z", "GB")
    # One week after the trace ends wraps to the same hour of the trace's week.
    after = trace.intensity("GB", datetime(2022, 6, 22, 4, 0, tzinfo=UTC))
    assert after.g_co2_per_kwh == csv_value(WEEK, "2022-06-15T04:00:00Z", "GB")


@needs_week
def test_trace_forecast_has_one_reading_per_hour() -> None:
    start = datetime(2022, 6, 19, 20, 30, tzinfo=UTC)
    readings = TraceProvider(WEEK).forecast("FR", 6, at=start)
    assert len(readings) == 6
    assert [r.at for r in readings] == [start.replace(minute=0) + timedelta(hours=k) for k in range(6)]
    assert readings[0].g_co2_per_kwh == csv_value(WEEK, "2022-06-19T20:00:00Z", "FR")
    assert readings[4].g_co2_per_kwh == csv_value(WEEK, "2022-06-13T00:00:00Z", "FR")  # wrapped


@needs_week
def test_trace_refuses_a_zone_it_has_no_column_for() -> None:
    with pytest.raises(GridError, match="'XX' is not in carbon trace.*FR"):
        TraceProvider(WEEK).intensity("XX", datetime(2022, 6, 13, tzinfo=UTC))


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("time,FR\n2022-01-01T00:00:00Z,1\n", "header must be"),
        ("datetime_utc,FR\n2022-01-01T00:00:00Z,abc\n", "line 2, zone FR: 'abc' is not a number"),
        ("datetime_utc,FR\n2022-01-01T00:00:00Z,-3\n", "negative"),
        ("datetime_utc,FR,DE\n2022-01-01T00:00:00Z,1\n", "expected 3 fields, found 2"),
        ("datetime_utc,FR\n2022-01-01T00:00:00Z,1\n2022-01-01T02:00:00Z,1\n", "line 3.*hour by hour"),
        ("datetime_utc,FR\nyesterday,1\n", "not an ISO-8601 time"),
        ("datetime_utc,FR\n", "no data rows"),
    ],
)
def test_a_malformed_trace_gives_a_clear_error(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(GridError, match=complaint):
        TraceProvider(path)


def test_a_missing_trace_file_says_to_check_the_path(tmp_path: Path) -> None:
    with pytest.raises(GridError, match="check the path"):
        TraceProvider(tmp_path / "nope.csv")


# --- chain ---------------------------------------------------------------------------------
class CountingProvider:
    """A tiny real provider with a fixed answer, or a fixed failure."""

    def __init__(self, name: str, value: float | None) -> None:
        self.name, self.value, self.calls = name, value, 0

    def intensity(self, zone: str, at: datetime | None = None) -> Reading:
        self.calls += 1
        if self.value is None:
            raise GridError(f"{self.name} is down")
        return Reading(zone, self.value, at or datetime.now(UTC), self.name)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_chain_serves_a_cached_reading_within_the_ttl_and_refreshes_after() -> None:
    clock, live = FakeClock(), CountingProvider("live", 120.0)
    chain = ProviderChain([live], ttl_s=300, clock=clock)
    first = chain.intensity("DE")
    clock.now_s += 299
    assert chain.intensity("DE") is first and live.calls == 1
    clock.now_s += 2
    chain.intensity("DE")
    assert live.calls == 2


def test_chain_falls_back_in_order_and_records_each_failure(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    down1, down2, table = CountingProvider("a", None), CountingProvider("b", None), EmbeddedTableProvider()
    chain = ProviderChain([down1, down2, table, CountingProvider("never", 1.0)], clock=clock)
    with caplog.at_level("WARNING", logger="hydra_tasks.grid.chain"):
        reading = chain.intensity("FR")
    assert reading.g_co2_per_kwh == 33.0 and reading.source.startswith("embedded-table")
    assert [(f.provider, f.zone, f.clock_s) for f in chain.failures] == [("a", "FR", 1000.0), ("b", "FR", 1000.0)]
    assert "a is down" in chain.failures[0].message
    assert caplog.text.count("failed for zone FR") == 2


def test_chain_keeps_only_the_latest_failures() -> None:
    chain = ProviderChain([CountingProvider("a", None), EmbeddedTableProvider()], ttl_s=0, max_failures=3)
    for _ in range(5):
        chain.intensity("FR")
    assert len(chain.failures) == 3


def test_chain_lists_every_provider_when_all_fail() -> None:
    chain = ProviderChain([CountingProvider("a", None), EmbeddedTableProvider()])
    with pytest.raises(GridError, match=r"every carbon provider failed.*a: a is down.*embedded-table"):
        chain.intensity("XX")
