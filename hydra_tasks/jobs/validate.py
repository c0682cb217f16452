"""Small, strict field validators for job specifications.

Every failure raises :class:`InvalidJobSpec` with a message naming the field, what was
seen and what is accepted, so the CLI and HTTP API can show it as-is.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from ..errors import InvalidJobSpec

_MISSING = object()


def require_mapping(raw: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise InvalidJobSpec(f"{what} must be a JSON object, got {type(raw).__name__}.")
    return raw


def reject_unknown(raw: Mapping[str, Any], allowed: Iterable[str], what: str) -> None:
    allowed = set(allowed)
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise InvalidJobSpec(f"Unknown field(s) in {what}: {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}.")


def integer(raw: Mapping[str, Any], name: str, lo: int, hi: int, default: Any = _MISSING, *,
            above: str = "") -> int:
    """An integer field. Integral floats (``1e9``) are accepted; bools and strings are not.
    ``above`` explains the upper limit (what to do instead) when a value exceeds it."""
    value = raw.get(name, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise InvalidJobSpec(f"Missing required field '{name}' (an integer in [{lo}, {hi}]).")
        return int(default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidJobSpec(f"'{name}' must be an integer, got {type(value).__name__} {value!r}.")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise InvalidJobSpec(f"'{name}' must be a whole number, got {value!r}.")
        value = int(value)
    if value > hi and above:
        raise InvalidJobSpec(f"'{name}'={value:,} is out of range: {above}.")
    if not lo <= value <= hi:
        raise InvalidJobSpec(f"'{name}'={value} is out of range; use an integer in [{lo}, {hi}].")
    return value


def number(raw: Mapping[str, Any], name: str, lo: float, hi: float, default: Any = _MISSING) -> float:
    """A finite float field within [lo, hi]."""
    value = raw.get(name, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise InvalidJobSpec(f"Missing required field '{name}' (a number in [{lo}, {hi}]).")
        return float(default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidJobSpec(f"'{name}' must be a number, got {type(value).__name__} {value!r}.")
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidJobSpec(f"'{name}'={value!r} is out of range; use a finite number in [{lo}, {hi}].")
    return value
