"""What a worker reports about its own site: the grid zone it draws from and its on-site renewable
share (home solar, say), sent signed with the worker's key to ``POST /api/update_grid_info``.

The report is JSON ``{"worker_id", "zone", "renewable_share", "timestamp", "signature"}``; the
signature is Ed25519 (:mod:`hydra_tasks.trust.identity`) over the other four fields plus
``"action": "update_grid_info"``. It is accepted only from the key registered with that worker,
only if its timestamp is within :data:`MAX_CLOCK_SKEW_S` of the server's clock and newer than the
last accepted report (so a captured report cannot be replayed), and only for a zone the carbon
providers know. The router uses a report for :data:`MAX_AGE_S`; after that the worker counts as
drawing from its region's zone again.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

import redis
from nacl.signing import SigningKey

from ..trust import identity
from ..errors import SignatureError
from ..lua import GridInfoCode, scripts
from ..worker.registry import WorkerInfo, get_worker
from . import CarbonProvider, GridError
from .regions import Region, RegionSignal

ACTION = "update_grid_info"
# Volunteers' clocks can be minutes off (a machine without NTP): a report stamped up to 10 minutes either
# way is taken (the netns cluster checks 5 minutes both ways). "Newer than the last one" is what stops
# replays; the window only bounds how long a signed, never-sent report stays usable, and how long a
# worker whose clock was ahead and then corrected must wait before its reports count again.
MAX_CLOCK_SKEW_S = 600.0       # a report may be this old ...
MAX_FUTURE_SKEW_S = 600.0      # ... or this far ahead
_ZONE_RE = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,10}){0,3}$")
MAX_AGE_S = 86_400.0
_FIELDS = {"worker_id", "zone", "renewable_share", "timestamp", "signature"}


@dataclass(frozen=True)
class GridReport:
    worker_id: str
    zone: str
    renewable_share: float
    timestamp: float

    def message(self) -> dict[str, Any]:
        return {"action": ACTION, "worker_id": self.worker_id, "zone": self.zone,
                "renewable_share": self.renewable_share, "timestamp": self.timestamp}


def signed_report(key: SigningKey, worker_id: str, zone: str, renewable_share: float,
                  timestamp: float | None = None) -> dict[str, Any]:
    """The request body a worker sends (what ``hydra grid-info`` posts)."""
    report = GridReport(worker_id, zone, float(renewable_share), time.time() if timestamp is None else timestamp)
    return {**report.message(), "signature": identity.sign(key, report.message())}


def parse_report(raw: object) -> tuple[GridReport, dict[str, Any], object]:
    """The report, the message its signature covers (the fields exactly as sent) and the
    signature, or GridError saying which field is wrong."""
    if not isinstance(raw, Mapping):
        raise GridError("The body must be a JSON object with worker_id, zone, renewable_share, timestamp, signature.")
    fields = set(raw) - {"action"}
    if fields != _FIELDS:
        missing, extra = sorted(_FIELDS - fields), sorted(fields - _FIELDS)
        raise GridError(f"Grid report fields are wrong (missing: {missing or 'none'}, unknown: {extra or 'none'}); "
                        f"send exactly {sorted(_FIELDS)}.")
    if raw.get("action", ACTION) != ACTION:
        raise GridError(f"'action' must be {ACTION!r}.")
    worker_id, zone, share, stamp = raw["worker_id"], raw["zone"], raw["renewable_share"], raw["timestamp"]
    if not isinstance(worker_id, str) or not 0 < len(worker_id) <= 200:
        raise GridError("'worker_id' must be the worker's name (a non-empty string).")
    if not isinstance(zone, str) or not _ZONE_RE.match(zone):
        raise GridError("'zone' must be an Electricity Maps zone code such as FR, DE, GB or US-CAL-CISO.")
    for name, value in (("renewable_share", share), ("timestamp", stamp)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise GridError(f"'{name}' must be a number.")
    if not 0.0 <= share <= 1.0:
        raise GridError(f"'renewable_share'={share!r} must be between 0 and 1 (the share of power made on site).")
    message = {"action": ACTION, "worker_id": worker_id, "zone": zone, "renewable_share": share, "timestamp": stamp}
    return GridReport(worker_id, zone, float(share), float(stamp)), message, raw["signature"]


def apply_report(client: redis.Redis, report: GridReport, message: Mapping[str, Any], signature: object, *,
                 zone_known: Callable[[str], bool], now: float | None = None) -> None:
    """Verify and store a report: SignatureError if it is not the worker's, stale or replayed;
    then GridError if no carbon source covers its zone (checked only for authenticated reports)."""
    worker = get_worker(client, report.worker_id)
    if worker is None or not worker.public_key:
        raise SignatureError(f"No worker {report.worker_id!r} with a registered key; start the worker first.")
    identity.verify(worker.public_key, message, signature)
    store_report(client, report, worker.public_key, zone_known=zone_known, now=now)


def store_report(client: redis.Redis, report: GridReport, public_key: str, *, zone_known: Callable[[str], bool],
                 now: float | None = None) -> None:
    """Store a report already authenticated as ``public_key``'s (the webapp checked the report's
    signature; the intake worker checked the envelope's). SignatureError if it is stale or replayed,
    GridError if no carbon source covers its zone."""
    now = time.time() if now is None else now
    if not now - MAX_CLOCK_SKEW_S <= report.timestamp <= now + MAX_FUTURE_SKEW_S:
        raise SignatureError(f"The report's timestamp is more than {MAX_CLOCK_SKEW_S:.0f} s old or "
                             f"{MAX_FUTURE_SKEW_S:.0f} s ahead of the server's clock; sign a fresh report (and check "
                             "the worker's clock).")
    if not zone_known(report.zone):
        raise GridError(f"No carbon data covers zone {report.zone!r}; use a zone of the embedded table or the trace "
                        "(e.g. FR, DE, GB, US-CAL-CISO).")
    outcome = scripts(client).grid_info(report.worker_id, public_key, report.zone, report.renewable_share,
                                        report.timestamp)
    if outcome is GridInfoCode.REPLAY:
        raise SignatureError("This report is not newer than the last one accepted (a replay?); sign a fresh one.")
    if outcome is GridInfoCode.KEY_CHANGED:
        raise SignatureError("The worker's key changed while the report was checked; sign it again.")


def zone_known_locally(provider: CarbonProvider, zone: str) -> bool:
    """Whether a local source (the trace or the embedded table) in ``provider`` covers the zone:
    never a live API, so a report cannot make the server spend the operator's API quota."""
    from .table import EmbeddedTableProvider
    from .trace import TraceProvider

    for source in getattr(provider, "providers", [provider]):
        if isinstance(source, (TraceProvider, EmbeddedTableProvider)):
            try:
                source.intensity(zone)
                return True
            except GridError:
                continue
    return False


def reported_site(worker: WorkerInfo, now: float) -> tuple[str, float] | None:
    """(zone, renewable share) a worker reported, if it is fresh enough to use."""
    if worker.grid_zone and now - worker.grid_reported_at <= MAX_AGE_S:
        return worker.grid_zone, worker.grid_renewable_share
    return None


def worker_signals(workers: Iterable[WorkerInfo], regions: Mapping[str, Region], provider: CarbonProvider, *,
                   now: float, at: datetime | None = None) -> dict[str, RegionSignal]:
    """What the router knows about each worker's electricity: the zone and on-site renewable
    share it reported (if fresh), else its region's. Unknown zones or failed providers give
    ``None`` intensity, which the router treats as average, never as clean."""
    by_zone: dict[str, tuple[float | None, str]] = {}

    def intensity(zone: str | None) -> tuple[float | None, str]:
        if zone is None:
            return None, "unknown"
        if zone not in by_zone:
            try:
                reading = provider.intensity(zone, at)
                by_zone[zone] = (reading.g_co2_per_kwh, reading.source)
            except GridError:
                by_zone[zone] = (None, "unavailable")
        return by_zone[zone]

    out: dict[str, RegionSignal] = {}
    for worker in workers:
        region = regions.get(worker.region, Region(worker.region, None))
        site = reported_site(worker, now)
        zone, share = site if site else (region.zone, region.renewable_share)
        g, source = intensity(zone)
        out[worker.worker_id] = RegionSignal(g, region.price_per_kwh, share, source if not site else f"worker:{source}")
    return out
