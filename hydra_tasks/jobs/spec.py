"""Parse and validate a job request into a :class:`JobSpec`, or explain what is wrong."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from ..errors import InvalidJobSpec
from ..models import JobKind, JobSpec
from . import handler
from .validate import integer, reject_unknown, require_mapping

MAX_DEADLINE_AHEAD_S = 366 * 86_400


def parse_deadline(value: Any, *, now: float | None = None) -> float | None:
    """A deadline as unix seconds or an ISO-8601 string with a timezone; must be in the future."""
    if value is None:
        return None
    now = time.time() if now is None else now
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidJobSpec(f"'deadline'={value!r} is not ISO-8601 (e.g. 2026-12-01T18:00:00+00:00).") from None
        if parsed.tzinfo is None:
            raise InvalidJobSpec(f"'deadline'={value!r} has no timezone; add one, e.g. +00:00 or Z.")
        ts = parsed.timestamp()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        ts = float(value)
    else:
        raise InvalidJobSpec(f"'deadline' must be unix seconds or an ISO-8601 string, got {type(value).__name__}.")
    if not now < ts <= now + MAX_DEADLINE_AHEAD_S:
        raise InvalidJobSpec("'deadline' must be in the future and at most a year ahead.")
    return ts


def parse_job_spec(raw: Any) -> JobSpec:
    """Validate a request such as ``{"kind": "pi", "params": {"samples": 1e9, "seed": 7}}``."""
    raw = require_mapping(raw, "The job specification")
    reject_unknown(raw, {"kind", "params", "priority", "deadline"}, "the job specification")
    kind_raw = raw.get("kind")
    try:
        kind = JobKind(kind_raw)
    except ValueError:
        kinds = ", ".join(k.value for k in JobKind)
        raise InvalidJobSpec(f"Unknown job kind {kind_raw!r}; use one of: {kinds}.") from None
    params = handler(kind).parse_params(require_mapping(raw.get("params", {}), "'params'"))
    priority = integer(raw, "priority", 0, 9, default=5)
    return JobSpec(kind=kind, params=params, priority=priority, deadline_ts=parse_deadline(raw.get("deadline")))
