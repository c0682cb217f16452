"""Deadlines can be given relative to now (+2h), and a refused deadline says what time it is now."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from hydra_tasks.errors import InvalidJobSpec
from hydra_tasks.jobs.spec import parse_deadline, parse_job_spec

NOW = datetime(2026, 12, 1, 23, 0, 0, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(("text", "seconds"), [("+2h", 7_200), ("+30m", 1_800), ("+1d", 86_400), ("+90s", 90),
                                               ("+1.5h", 5_400), (" +2H ", 7_200), ("+365d", 365 * 86_400)])
def test_a_deadline_from_now_is_that_long_after_now(text: str, seconds: int) -> None:
    assert parse_deadline(text, now=NOW) == NOW + seconds


def test_a_relative_deadline_is_accepted_in_a_job_request() -> None:
    spec = parse_job_spec({"kind": "pi", "params": {"samples": 10}, "deadline": "+6h"})
    assert spec.deadline_ts is not None
    assert abs(spec.deadline_ts - (datetime.now(timezone.utc).timestamp() + 6 * 3_600)) < 60


@pytest.mark.parametrize("value", ["2026-12-01T06:00:00Z", "+0s", "+367d", NOW - 1])
def test_a_past_or_too_far_deadline_is_refused_showing_now_and_the_latest_allowed(value: object) -> None:
    with pytest.raises(InvalidJobSpec) as info:
        parse_deadline(value, now=NOW)
    message = str(info.value)
    assert "must be in the future and at most a year ahead" in message
    assert "it is now 2026-12-01T23:00:00Z, so the latest is 2027-12-02T23:00:00Z" in message
    assert "+2h" in message  # the form that is always current


@pytest.mark.parametrize("value", ["tomorrow", "+2 weeks", "-2h", "+h"])
def test_an_unreadable_deadline_shows_both_accepted_forms(value: str) -> None:
    with pytest.raises(InvalidJobSpec) as info:
        parse_deadline(value, now=NOW)
    assert "is not ISO-8601 or a time from now (e.g. +2h, +30m, +1d or 2026-12-02T01:00:00Z)" in str(info.value)
