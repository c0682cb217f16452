"""Bounded time series for the dashboard's charts (``GET /api/history``).

Three series are written as things happen, into one Redis hash per UTC hour
(``hydra:history:{hour}``, see :mod:`.keys`) that expires :data:`KEEP_S` after its hour ends, so the
history never grows without bound and needs no clean-up job:

* chunks merged, counted in :data:`BUCKET_S`-second buckets (:func:`record_chunk`, from the merge in
  jobs/collect.py): the fleet's chunks/s;
* each worker's measured speed (the EWMA scheduling uses) after its last chunk merged in a minute
  (also :func:`record_chunk`);
* each region's effective carbon intensity (grid intensity net of on-site renewables, what the
  router and time shifting compare), sampled once a minute by whichever control worker sweeps first
  (:func:`sample_carbon`, from the sweeper): a deferred job waits precisely when nothing merges, so
  this series cannot come from the merge path.

Tokens minted per day come from the ledger's own ``hydra:ledger:daily``. :func:`read` turns all of
it, plus why each deferred job waits (:func:`deferred_jobs`), into the JSON the endpoint serves.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import redis

from . import keys
from .grid import CarbonProvider, GridError
from .grid.regions import Region, parse_regions, region_signals
from .models import JobState, WorkerState
from .settings import Settings

if TYPE_CHECKING:
    from .lua import Deferred

HOUR_S = 3600
BUCKET_S = 10                 # chunks merged: 10-second buckets
MINUTE_S = 60                 # speeds and carbon intensity: one value per minute
KEEP_S = 6 * HOUR_S           # an hour's hash expires this long after the hour ends
MAX_WINDOW_S = KEEP_S         # the longest window read() serves
MAX_WORKERS = 20              # speed series served: the workers heard from most recently
MAX_DEFERRED = 10             # deferred jobs explained
MAX_DAYS = 366


def _hour_key(t: float) -> tuple[str, int]:
    hour = int(t // HOUR_S)
    return keys.history(hour), (hour + 1) * HOUR_S + KEEP_S


def record_chunk(pipe: "redis.client.Pipeline | Deferred", *, now: float, worker_id: str | None = None, kind: str = "",
                 rate: float | None = None) -> None:
    """Queue on ``pipe``: one more chunk merged now, and (if measured) the worker's speed after it."""
    key, expires = _hour_key(now)
    pipe.hincrby(key, f"chunks:{int(now // BUCKET_S) * BUCKET_S}", 1)
    if worker_id and rate is not None and math.isfinite(rate):
        pipe.hset(key, f"speed:{kind}:{int(now // MINUTE_S) * MINUTE_S}:{worker_id}", repr(float(rate)))
    pipe.expireat(key, expires)


def _regions_to_sample(client: redis.Redis, settings: Settings) -> set[str]:
    """The regions of registered workers that are not offline, and the regions HYDRA_REGIONS names."""
    names = {part.split("=", 1)[0].strip() for part in settings.regions.split(",") if "=" in part}
    worker_ids = sorted(client.smembers(keys.WORKERS))
    reads = client.pipeline(transaction=False)
    for wid in worker_ids:
        reads.hmget(keys.worker(wid), "region", "state")
    for region, state in reads.execute() if worker_ids else []:
        if region and state != WorkerState.OFFLINE.value:
            names.add(region)
    return names


def effective(g_co2_per_kwh: float | None, renewable_share: float | None) -> float | None:
    """gCO2/kWh the power really carries: grid intensity net of on-site renewables (router.py's rule)."""
    return None if g_co2_per_kwh is None else g_co2_per_kwh * (1.0 - (renewable_share or 0.0))


def sample_carbon(client: redis.Redis, settings: Settings, provider: CarbonProvider, *,
                  now: float | None = None) -> dict[str, float]:
    """Record each region's effective intensity for the current minute, once per minute fleet-wide
    (the first caller in a minute claims it with HSETNX). Returns what it recorded ({} if another did)."""
    now = time.time() if now is None else now
    minute = int(now // MINUTE_S) * MINUTE_S
    key, expires = _hour_key(now)
    if not client.hsetnx(key, f"sampled:{minute}", "1"):
        return {}
    names = _regions_to_sample(client, settings)
    signals = region_signals(parse_regions(settings.regions), names, provider) if names else {}
    values = {name: g for name, s in signals.items()
              if (g := effective(s.g_co2_per_kwh, s.renewable_share)) is not None}
    pipe = client.pipeline(transaction=False)
    for name, g in values.items():
        pipe.hset(key, f"carbon:{minute}:{name}", f"{g:.1f}")
    pipe.expireat(key, expires)
    pipe.execute()
    return values


# --- reading ---------------------------------------------------------------------------------------
def _hours(client: redis.Redis, start: float, end: float) -> dict[str, str]:
    first, last = int(start // HOUR_S), int(end // HOUR_S)
    reads = client.pipeline(transaction=False)
    for hour in range(first, last + 1):
        reads.hgetall(keys.history(hour))
    merged: dict[str, str] = {}
    for fields in reads.execute():
        merged.update(fields)
    return merged


def series(client: redis.Redis, *, now: float, window_s: int) -> dict[str, Any]:
    """The chunk rate, per-worker speeds and per-region intensity over the last ``window_s`` seconds.

    Times are unix seconds (the start of each bucket). ``chunks_per_s`` has one point per step
    (10 s for windows up to an hour, else 60 s), zeros included; the other series only have the
    minutes something was measured."""
    window_s = max(MINUTE_S, min(int(window_s), MAX_WINDOW_S))
    start = now - window_s
    step = BUCKET_S if window_s <= HOUR_S else MINUTE_S
    fields = _hours(client, start, now)
    chunks: dict[int, int] = {}
    speeds: dict[str, dict[str, list[tuple[int, float]]]] = {}
    carbon: dict[str, list[tuple[int, float]]] = {}
    for name, value in fields.items():
        family, _, rest = name.partition(":")
        if family == "chunks":
            t = int(rest)
            if t >= start - step:
                bucket = t // step * step
                chunks[bucket] = chunks.get(bucket, 0) + int(value)
        elif family == "speed":
            kind, _, rest = rest.partition(":")
            minute, _, worker_id = rest.partition(":")
            if int(minute) >= start:
                speeds.setdefault(worker_id, {}).setdefault(kind, []).append((int(minute), float(value)))
        elif family == "carbon":
            minute, _, region = rest.partition(":")
            if int(minute) >= start:
                carbon.setdefault(region, []).append((int(minute), float(value)))
    first = int(start // step) * step
    rate = [[t, chunks.get(t, 0) / step] for t in range(first, int(now // step) * step + 1, step)]
    newest = sorted(speeds, key=lambda w: max(t for points in speeds[w].values() for t, _ in points), reverse=True)
    return {
        "now": now, "window_s": window_s, "step_s": step,
        "chunks_per_s": rate,
        "worker_speed": {w: {kind: sorted(points) for kind, points in sorted(speeds[w].items())}
                         for w in sorted(newest[:MAX_WORKERS])},
        "carbon": {region: sorted(points) for region, points in sorted(carbon.items())},
    }


def minted_per_day(client: redis.Redis, *, days: int, now: float) -> list[list[Any]]:
    """``[["YYYY-MM-DD", micro-tokens], ...]`` for the last ``days`` UTC days, oldest first, zeros included."""
    days = max(1, min(int(days), MAX_DAYS))
    today = int(now // 86400)
    labels = [datetime.fromtimestamp(d * 86400, timezone.utc).strftime("%Y-%m-%d")
              for d in range(today - days + 1, today + 1)]
    return [[label, int(micro or 0)] for label, micro in zip(labels, client.hmget(keys.LEDGER_DAILY, labels))]


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%H:%M UTC")


def explain_wait(threshold: float | None, deadline_ts: float | None, now_by_region: dict[str, float],
                 forecast_by_region: dict[str, list[float | None]], *, now: float) -> tuple[bool, str]:
    """(waiting, why) for a job with a deadline: whether no region's power is clean enough for it now,
    and a sentence a user can read ("waits for power below 120 g/kWh: ...; deadline 06:00 UTC")."""
    due = f"deadline {_clock(deadline_ts)}" if deadline_ts else "no deadline"
    if threshold is None:
        return False, f"runs on any power now ({due}): waiting longer would miss the deadline"
    clean = sorted((g, r) for r, g in now_by_region.items() if g <= threshold)
    if clean:
        names = ", ".join(f"{r} {g:.0f}" for g, r in clean[:3])
        return False, f"runs only where power is below {threshold:.0f} g/kWh (now: {names}); {due}"
    cleanest = min(((g, r) for r, g in now_by_region.items()), default=None)
    now_text = f"cleanest now {cleanest[1]} {cleanest[0]:.0f} g/kWh" if cleanest else "no region's intensity known"
    hour0 = math.floor(now / HOUR_S) * HOUR_S
    expected: tuple[int, str] | None = None
    for region, values in forecast_by_region.items():
        for k, g in enumerate(values):
            if k > 0 and g is not None and g <= threshold:
                if expected is None or k < expected[0]:
                    expected = (k, region)
                break
    when = (f"expected {expected[1]} at {_clock(hour0 + expected[0] * HOUR_S)}" if expected
            else "no forecast hour below it")
    return True, f"waits for power below {threshold:.0f} g/kWh: {now_text}; {when}; {due}"


def deferred_jobs(client: redis.Redis, settings: Settings, provider: CarbonProvider, *,
                  now: float) -> list[dict[str, Any]]:
    """Each live job with a deadline (at most :data:`MAX_DEFERRED`): its threshold, deadline,
    progress and why it waits. Intensities come from the newest carbon sample; forecasts from the
    provider chain (cached), for the regions sampled, up to the deadline."""
    job_ids = client.zrange(keys.JOBS_DEADLINES, 0, MAX_DEFERRED - 1)
    if not job_ids:
        return []
    reads = client.pipeline(transaction=False)
    for job_id in job_ids:
        reads.hmget(keys.job(job_id), "state", "spec", "carbon_threshold", "units_done", "units_total", "kind")
    rows = [(job_id, row) for job_id, row in zip(job_ids, reads.execute())
            if row[0] is not None and not JobState(row[0]).is_final]
    if not rows:
        return []
    latest = _latest_carbon(client, now)
    regions = parse_regions(settings.regions)
    forecasts: dict[tuple[str, int], list[float | None]] = {}
    out = []
    for job_id, (state, spec_json, threshold_raw, done, total, kind) in rows:
        deadline = json.loads(spec_json or "{}").get("deadline_ts")
        threshold = None if threshold_raw in (None, "", "inf") else float(threshold_raw)
        hours = 1 if not deadline else max(1, min(72, math.ceil((deadline - now) / HOUR_S) + 1))
        by_region: dict[str, list[float | None]] = {}
        if threshold is not None and not any(g <= threshold for g in latest.values()):
            for name in latest:
                if (name, hours) not in forecasts:
                    forecasts[(name, hours)] = _forecast(provider, regions.get(name, Region(name, None)), hours, now)
                by_region[name] = forecasts[(name, hours)]
        waiting, why = explain_wait(threshold, deadline, latest, by_region, now=now)
        out.append({"id": job_id, "kind": kind, "state": state, "deadline_ts": deadline,
                    "carbon_threshold": threshold, "progress": int(done or 0) / int(total) if total and int(total)
                    else 0.0, "waiting": waiting, "why": why})
    return out


def _latest_carbon(client: redis.Redis, now: float) -> dict[str, float]:
    """Each region's newest sampled intensity within the last 10 minutes."""
    fields = _hours(client, now - 10 * MINUTE_S, now)
    best: dict[str, tuple[int, float]] = {}
    for name, value in fields.items():
        if name.startswith("carbon:"):
            minute_text, _, region = name[len("carbon:"):].partition(":")
            minute = int(minute_text)
            if minute >= now - 10 * MINUTE_S and (region not in best or best[region][0] < minute):
                best[region] = (minute, float(value))
    return {region: g for region, (_, g) in best.items()}


def _forecast(provider: CarbonProvider, region: Region, hours: int, now: float) -> list[float | None]:
    forecast = getattr(provider, "forecast", None)
    if region.zone is None or forecast is None:
        return []
    try:
        readings = forecast(region.zone, hours, at=datetime.fromtimestamp(now, timezone.utc))
    except (GridError, TypeError):
        return []
    return [effective(r.g_co2_per_kwh, region.renewable_share) for r in readings]


def read(client: redis.Redis, settings: Settings, provider: CarbonProvider, *, window_s: int, days: int,
         now: float | None = None) -> dict[str, Any]:
    """Everything ``GET /api/history`` serves (see webapp/history.py for the shape)."""
    now = time.time() if now is None else now
    out = series(client, now=now, window_s=window_s)
    out["minted_per_day_micro"] = minted_per_day(client, days=days, now=now)
    out["deferred"] = deferred_jobs(client, settings, provider, now=now)
    return out

