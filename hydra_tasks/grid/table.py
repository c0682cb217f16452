"""Annual average carbon intensity per zone, typed into the code: the provider that never fails.

Figures are the ``em_2024`` column (gCO2eq/kWh, lifecycle) of the project's shared
``annual_intensity_table.csv``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Mapping

from . import GridError, Reading, to_utc

ATTRIBUTION = (
    "Annual carbon-intensity figures: Electricity Maps yearly data (ODbL, credit 'Electricity Maps') "
    "and Ember 2024 (CC BY 4.0), via thegreenwebfoundation/co2.js v0.19."
)

#: Year the figures describe.
TABLE_YEAR = 2024

#: Electricity Maps zone code -> annual mean gCO2eq/kWh in 2024 (see ATTRIBUTION).
ANNUAL_G_CO2_PER_KWH: Mapping[str, float] = MappingProxyType(
    {
        "FR": 33.0,
        "DE": 341.0,
        "PL": 581.0,
        "SE": 23.0,
        "NO": 33.0,
        "GB": 175.0,
        "IE": 352.0,
        "ES": 129.0,
        "NL": 251.0,
        "FI": 80.0,
        "US-CAL-CISO": 229.0,
        "US-TEX-ERCO": 377.0,
        "US-MIDA-PJM": 403.0,
        "US": 409.0,
        "IN": 614.0,
        "AU": 489.0,
        "BR": 91.0,
        "JP": 464.0,
        "SG": 485.0,
        "CA-QC": 35.0,
    }
)


class EmbeddedTableProvider:
    """Annual means per zone. Always available; fails only for a zone it does not know.

    With ``parent_fallback`` (the default) a sub-zone missing from the table uses its country,
    the part of the code before the first ``-``: ``SE-SE3`` -> ``SE``, ``US-NW-BPAT`` -> ``US``.
    The reading keeps the requested zone and names the table row used in ``source``.
    """

    name = "embedded-table"

    def __init__(
        self,
        table: Mapping[str, float] | None = None,
        *,
        parent_fallback: bool = True,
    ) -> None:
        self._table = dict(ANNUAL_G_CO2_PER_KWH if table is None else table)
        self._parent_fallback = parent_fallback

    @property
    def zones(self) -> frozenset[str]:
        """Zone codes with a row of their own."""
        return frozenset(self._table)

    def row_for(self, zone: str) -> str:
        """The table row that answers for ``zone``, or GridError if none does."""
        if zone in self._table:
            return zone
        parent = zone.split("-", 1)[0]
        if self._parent_fallback and parent in self._table:
            return parent
        known = ", ".join(sorted(self._table))
        raise GridError(
            f"zone {zone!r} is not in the embedded carbon table; use one of: {known} "
            "(or put a live provider or a trace that covers it before the table in the chain)"
        )

    def intensity(self, zone: str, at: datetime | None = None) -> Reading:
        """The annual mean for ``zone``; ``at`` only stamps the reading."""
        row = self.row_for(zone)
        when = datetime.now(timezone.utc) if at is None else to_utc(at)
        return Reading(
            zone=zone,
            g_co2_per_kwh=self._table[row],
            at=when,
            source=f"{self.name}:{row}:{TABLE_YEAR}",
        )

    def forecast(self, zone: str, hours: int, *, at: datetime | None = None) -> list[Reading]:
        """A flat forecast: the annual mean is the best expectation the table has for any hour."""
        if hours < 1:
            raise GridError(f"forecast needs at least 1 hour, got {hours}; pass hours >= 1")
        first = (datetime.now(timezone.utc) if at is None else to_utc(at)).replace(minute=0, second=0, microsecond=0)
        row = self.row_for(zone)
        return [Reading(zone=zone, g_co2_per_kwh=self._table[row], at=first + timedelta(hours=k),
                        source=f"{self.name}:{row}:{TABLE_YEAR}:flat") for k in range(hours)]
