"""Parse and validate a job request into a :class:`JobSpec`, or explain what is wrong."""

from __future__ import annotations

import math
import re
import time
from datetime import datetime, timezone
from typing import Any

from ..errors import InvalidJobSpec
from ..models import JobKind, JobSpec
from . import handler
from .validate import integer, number, reject_unknown, require_mapping

MAX_DEADLINE_AHEAD_S = 366 * 86_400
MAX_DELAY_WEIGHT = 10_000.0  # gCO2/kWh per hour: beyond any grid's range, i.e. "never wait"
_RELATIVE = re.compile(r"^\+\s*(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_deadline(value: Any, *, now: float | None = None) -> float | None:
    """A deadline as unix seconds, an ISO-8601 string with a timezone, or a time from now
    (``"+2h"``, ``"+30m"``, ``"+1d"``, ``"+90s"``); it must be in the future and at most a year ahead."""
    if value is None:
        return None
    now = time.time() if now is None else now
    examples = f"e.g. +2h, +30m, +1d or {_iso(now + 7_200)}"
    if isinstance(value, str):
        relative = _RELATIVE.match(value.strip().lower())
        if relative:
            ts = now + float(relative.group(1)) * _UNIT_S[relative.group(2)]
        else:
            try:
                parsed = datetime.fromisoformat(value.strip())
            except ValueError:
                raise InvalidJobSpec(f"'deadline'={value!r} is not ISO-8601 or a time from now ({examples}).") from None
            if parsed.tzinfo is None:
                raise InvalidJobSpec(f"'deadline'={value!r} has no timezone; add one, e.g. +00:00 or Z.")
            ts = parsed.timestamp()
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        ts = float(value)
    else:
        raise InvalidJobSpec(f"'deadline' must be unix seconds or a string ({examples}), got {value!r}.")
    if not now < ts <= now + MAX_DEADLINE_AHEAD_S:
        when = f" = {_iso(ts)}" if abs(ts) < 1e11 and str(value) != _iso(ts) else ""
        raise InvalidJobSpec(
            f"'deadline'={value!r}{when} must be in the future and at most a year ahead: it is now {_iso(now)}, "
            f"so the latest is {_iso(now + MAX_DEADLINE_AHEAD_S)}. A time from now ({examples}) is always current.")
    return ts


def parse_job_spec(raw: Any, *, confidential_default: bool = False, attestation: str = "none") -> JobSpec:
    """Validate a request such as ``{"kind": "pi", "params": {"samples": 1e9, "seed": 7}}``.

    ``confidential`` (a boolean) defaults to ``confidential_default`` (HYDRA_CONFIDENTIAL); a
    confidential job is refused while the attestation policy (HYDRA_ATTESTATION) is "none"."""
    raw = require_mapping(raw, "The job specification")
    reject_unknown(raw, {"kind", "params", "priority", "deadline", "confidential", "delay_weight"},
                   "the job specification")
    confidential = raw.get("confidential", confidential_default)
    if not isinstance(confidential, bool):
        raise InvalidJobSpec(f"'confidential' must be true or false, got {confidential!r}.")
    if confidential and attestation == "none":
        raise InvalidJobSpec("'confidential': true needs an attestation policy, and this control plane has "
                             "HYDRA_ATTESTATION=none (no worker is ever attested); ask the operator to set "
                             "HYDRA_ATTESTATION, or submit the job without 'confidential'.")
    kind_raw = raw.get("kind")
    try:
        kind = JobKind(kind_raw)
    except ValueError:
        kinds = ", ".join(k.value for k in JobKind)
        raise InvalidJobSpec(f"Unknown job kind {kind_raw!r}; use one of: {kinds}.") from None
    params = handler(kind).parse_params(require_mapping(raw.get("params", {}), "'params'"))
    priority = integer(raw, "priority", 0, 9, default=5)
    deadline_ts = parse_deadline(raw.get("deadline"))
    delay_weight = number(raw, "delay_weight", 0.0, MAX_DELAY_WEIGHT, default=0.0)
    if delay_weight and deadline_ts is None:
        raise InvalidJobSpec("'delay_weight' prices waiting for cleaner power, and only a job with a 'deadline' "
                             "waits; add a deadline or leave out delay_weight.")
    return JobSpec(kind=kind, params=params, priority=priority, deadline_ts=deadline_ts, confidential=confidential,
                   delay_weight=delay_weight)
