"""Try carbon providers in order, cache per zone, and remember what failed.

Routing must keep working with every outside provider down, so a chain normally ends with the
:class:`~hydra_tasks.grid.table.EmbeddedTableProvider`, which never fails for a known zone.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence

from . import CarbonProvider, GridError, NotProvided, Reading, to_utc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProviderFailure:
    """One provider failing for one zone; ``clock_s`` is the chain's clock at that moment."""

    provider: str
    zone: str
    message: str
    clock_s: float


class ProviderChain:
    """The first good reading from ``providers``, cached per (zone, hour asked) for ``ttl_s``."""

    name = "chain"

    def __init__(
        self,
        providers: Sequence[CarbonProvider],
        *,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_failures: int = 100,
        on_failure: Callable[[ProviderFailure], None] | None = None,
        on_reading: Callable[[Reading], None] | None = None,
    ) -> None:
        if not providers:
            raise GridError("a ProviderChain needs at least one provider; end it with EmbeddedTableProvider()")
        if ttl_s < 0:
            raise GridError(f"ttl_s must be >= 0, got {ttl_s}; pass 0 to turn caching off")
        self.providers = list(providers)
        self.ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[tuple[str, datetime | None], tuple[float, Reading]] = {}
        self._forecasts: dict[tuple[str, datetime, int], tuple[float, list[Reading]]] = {}
        self._failures: deque[ProviderFailure] = deque(maxlen=max_failures)
        self._on_failure = on_failure  # e.g. to make failures visible to other processes
        self._on_reading = on_reading  # e.g. to keep the history forecasts are made from (grid/history.py)

    @property
    def failures(self) -> list[ProviderFailure]:
        """The most recent failures, oldest first (at most ``max_failures``)."""
        return list(self._failures)

    def clear_cache(self) -> None:
        """Forget every cached reading."""
        self._cache.clear()

    def intensity(self, zone: str, at: datetime | None = None) -> Reading:
        """The first provider's good reading for ``zone``; GridError if all of them fail."""
        key = (zone, None if at is None else to_utc(at).replace(minute=0, second=0, microsecond=0))
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        failed: list[ProviderFailure] = []
        for provider in self.providers:
            try:
                reading = provider.intensity(zone, at)
            except NotProvided as exc:  # by design, not a fault: not shown as a provider failure
                log.debug("carbon provider %s has no reading for zone %s: %s", _name(provider), zone, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - one broken provider must not stop routing
                failed.append(self._record(provider, zone, exc))
                continue
            self._cache[key] = (now, reading)
            if self._on_reading is not None:
                try:
                    self._on_reading(reading)
                except Exception:  # noqa: BLE001 - keeping a reading must not break routing
                    log.debug("could not pass on a reading", exc_info=True)
            return reading
        summary = "; ".join(f"{f.provider}: {f.message}" for f in failed)
        raise GridError(
            f"every carbon provider failed for zone {zone!r} ({summary}); "
            "end the chain with EmbeddedTableProvider() so routing always has a figure"
        )

    def forecast(self, zone: str, hours: int, *, at: datetime | None = None) -> list[Reading]:
        """Hourly readings for ``hours`` hours from the hour containing ``at`` (now if None), from
        the first provider that can forecast; cached like readings. GridError if none can."""
        first = to_utc(at if at is not None else datetime.now(timezone.utc)).replace(minute=0, second=0,
                                                                                      microsecond=0)
        key, now = (zone, first, hours), self._clock()
        cached = self._forecasts.get(key)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        failed: list[ProviderFailure] = []
        skipped: list[str] = []
        for provider in self.providers:
            method = getattr(provider, "forecast", None)
            if method is None:
                continue
            try:
                readings = method(zone, hours, at=first)
                if len(readings) < hours:
                    raise GridError(f"forecast has {len(readings)} hours, {hours} were asked for")
            except NotProvided as exc:
                skipped.append(f"{_name(provider)}: {exc}")
                log.debug("carbon provider %s has no forecast for zone %s: %s", _name(provider), zone, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - as for readings: fall through to the next provider
                failed.append(self._record(provider, zone, exc))
                continue
            if len(self._forecasts) > 4096:
                self._forecasts.clear()
            self._forecasts[key] = (now, readings[:hours])
            return readings[:hours]
        summary = "; ".join([f"{f.provider}: {f.message}" for f in failed] + skipped) or "no provider can forecast"
        raise GridError(f"no carbon forecast for zone {zone!r} ({summary})")

    def _record(self, provider: CarbonProvider, zone: str, exc: Exception) -> ProviderFailure:
        name = _name(provider)
        message = str(exc) if isinstance(exc, GridError) else f"{type(exc).__name__}: {exc}"
        failure = ProviderFailure(provider=name, zone=zone, message=message, clock_s=self._clock())
        self._failures.append(failure)
        if self._on_failure is not None:
            try:
                self._on_failure(failure)
            except Exception:  # noqa: BLE001 - reporting a failure must not break routing
                log.debug("could not report a provider failure", exc_info=True)
        log.warning("carbon provider %s failed for zone %s: %s", name, zone, message)
        return failure


def _name(provider: CarbonProvider) -> str:
    return str(getattr(provider, "name", type(provider).__name__))
