"""Replay an hourly carbon-intensity trace from a CSV file.

The file has a header ``datetime_utc,ZONE1,ZONE2,...`` and one row per hour, with ISO-8601 UTC
period starts that follow each other hour by hour (e.g. the Electricity Maps 2022 files in
``shared/data/carbon/derived``). It is read once into numpy arrays.

Times outside the trace wrap by hour of year, so a 2022 trace can replay any year:
``at`` is moved to the trace's year at the same hour of the year (month, day and hour kept), and
the hour offset from the trace start is then taken modulo the trace length. A full-year trace thus
replays the same calendar hour; a one-week trace (168 h, a multiple of 24) keeps the hour of day.
"""

from __future__ import annotations

import csv
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from . import GridError, Reading, to_utc

HOUR = timedelta(hours=1)


def _parse_stamp(text: str, *, where: str) -> datetime:
    try:
        stamp = datetime.fromisoformat(text.strip())
    except ValueError:
        raise GridError(f"{where}: {text!r} is not an ISO-8601 time; fix the row") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.astimezone(timezone.utc)


def _parse_value(text: str, *, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise GridError(f"{where}: {text!r} is not a number; fix the row") from None
    if not math.isfinite(value) or value < 0:
        raise GridError(f"{where}: {value!r} is negative or not finite; fix the row")
    return value


class TraceProvider:
    """Hourly intensities replayed from a CSV trace (see the module docstring for wrapping)."""

    def __init__(
        self,
        path: str | Path,
        *,
        name: str = "trace",
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.path = Path(path)
        self.name = name
        self._now = now
        self.start, self.zones, self._values = self._load(self.path)
        self._column = {zone: i for i, zone in enumerate(self.zones)}

    @property
    def hours(self) -> int:
        """Number of hourly rows in the trace."""
        return int(self._values.shape[0])

    @staticmethod
    def _load(path: Path) -> tuple[datetime, tuple[str, ...], np.ndarray]:
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
        except OSError as exc:
            raise GridError(f"cannot read carbon trace {path}: {exc.strerror}; check the path") from None
        if not rows or not rows[0] or rows[0][0].strip() != "datetime_utc" or len(rows[0]) < 2:
            raise GridError(
                f"{path}: the header must be 'datetime_utc,ZONE1,ZONE2,...'; fix the first line"
            )
        zones = tuple(cell.strip() for cell in rows[0][1:])
        if len(set(zones)) != len(zones) or "" in zones:
            raise GridError(f"{path}: zone columns must be unique and non-empty; fix the header")
        body = [row for row in rows[1:] if row]
        if not body:
            raise GridError(f"{path}: the trace has no data rows; use a file with at least one hour")
        values = np.empty((len(body), len(zones)), dtype=np.float64)
        start = _parse_stamp(body[0][0], where=f"{path} line 2")
        for i, row in enumerate(body):
            where = f"{path} line {i + 2}"
            if len(row) != len(zones) + 1:
                raise GridError(f"{where}: expected {len(zones) + 1} fields, found {len(row)}; fix the row")
            stamp = _parse_stamp(row[0], where=where)
            if stamp != start + i * HOUR:
                raise GridError(
                    f"{where}: time {row[0]} should be {(start + i * HOUR).isoformat()}; "
                    "rows must follow each other hour by hour with no gaps"
                )
            values[i] = [_parse_value(cell, where=f"{where}, zone {zones[j]}") for j, cell in enumerate(row[1:])]
        return start, zones, values

    def _index(self, at: datetime) -> int:
        """Row for the hour containing ``at``, wrapping by hour of year outside the trace."""
        offset = (at - self.start) // HOUR
        if 0 <= offset < self.hours:
            return int(offset)
        year_start = datetime(at.year, 1, 1, tzinfo=timezone.utc)
        hour_of_year = (at - year_start) // HOUR
        trace_year = datetime(self.start.year, 1, 1, tzinfo=timezone.utc)
        return int(((trace_year + hour_of_year * HOUR) - self.start) // HOUR) % self.hours

    def _column_of(self, zone: str) -> int:
        try:
            return self._column[zone]
        except KeyError:
            raise GridError(
                f"zone {zone!r} is not in carbon trace {self.path.name}; use one of: {', '.join(self.zones)}"
            ) from None

    def intensity(self, zone: str, at: datetime | None = None) -> Reading:
        """The value of the hour containing ``at`` (now if None)."""
        column = self._column_of(zone)
        when = self._now() if at is None else to_utc(at)
        return self._reading(zone, column, when)

    def forecast(self, zone: str, hours: int, *, at: datetime | None = None) -> list[Reading]:
        """``hours`` hourly readings starting with the hour containing ``at`` (now if None)."""
        if hours < 1:
            raise GridError(f"forecast needs at least 1 hour, got {hours}; pass hours >= 1")
        column = self._column_of(zone)
        first = self._now() if at is None else to_utc(at)
        first = first.replace(minute=0, second=0, microsecond=0)
        return [self._reading(zone, column, first + k * HOUR) for k in range(hours)]

    def _reading(self, zone: str, column: int, when: datetime) -> Reading:
        row = self._index(when)
        return Reading(
            zone=zone,
            g_co2_per_kwh=float(self._values[row, column]),
            at=when,
            source=f"{self.name}:{self.path.name}",
        )
