"""Settings come from HYDRA_* once, into one frozen object, with errors that say what to fix."""

from __future__ import annotations

import dataclasses

import pytest

from hydra_tasks.errors import ConfigError
from hydra_tasks.settings import Settings


def test_defaults_need_no_environment() -> None:
    s = Settings.from_env({})
    assert s.redis_url is None and s.grid_aware is True
    assert s.base_token_rate_micro == 1_000_000


def test_values_are_parsed_from_hydra_variables() -> None:
    s = Settings.from_env({"HYDRA_REDIS_URL": "redis://:pw@127.0.0.1:6390/0", "HYDRA_LEASE_S": "12.5",
                           "HYDRA_GRID_AWARE": "off", "HYDRA_BASE_TOKEN_RATE": "0.000123",
                           "HYDRA_PI_CHUNK_SAMPLES": "2000000"})
    assert s.redis_url == "redis://:pw@127.0.0.1:6390/0"
    assert s.lease_s == 12.5 and s.grid_aware is False and s.pi_chunk_samples == 2_000_000
    assert s.base_token_rate_micro == 123


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().lease_s = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HYDRA_LEASE_S": "soon"}, "HYDRA_LEASE_S='soon' is not a valid float"),
        ({"HYDRA_LEASE_S": "-1"}, "HYDRA_LEASE_S='-1' is out of range"),
        ({"HYDRA_GRID_AWARE": "maybe"}, "is not a boolean"),
        ({"HYDRA_CARBON_WEIGHT": "1.5"}, "HYDRA_CARBON_WEIGHT='1.5' is out of range"),
        ({"HYDRA_REDIS_URL": "localhost:6379"}, "HYDRA_REDIS_URL must start with redis://"),
        ({"HYDRA_BASE_TOKEN_RATE": "0.0000001"}, "more than 6 decimal places"),
        ({"HYDRA_BASE_TOKEN_RATE": "-1"}, "out of range"),
        ({"HYDRA_REGION": "EU West"}, "is not a region name"),
        ({"HYDRA_LEASES": "3"}, "Unknown setting(s) HYDRA_LEASES"),
        ({"HYDRA_HEARTBEAT_S": "10", "HYDRA_WORKER_TIMEOUT_S": "5"}, "must exceed HYDRA_HEARTBEAT_S"),
        ({"HYDRA_CARBON_WEIGHT": "0", "HYDRA_COST_WEIGHT": "0", "HYDRA_RENEWABLE_WEIGHT": "0"}, "all 0"),
        ({"HYDRA_RATE_LIMIT_TRANSFERS": "30/min"}, "HYDRA_RATE_LIMIT_TRANSFERS='30/min' is not a rate limit; "
                                                   "write requests per window from one client address, e.g. 30/minute"),
        ({"HYDRA_RATE_LIMIT_ENROLMENT": "0/hour"}, "or off to turn the limit off"),
        ({"HYDRA_RATE_LIMIT_READS": "5 per 0 seconds"}, "HYDRA_RATE_LIMIT_READS='5 per 0 seconds' is not a rate limit"),
        ({"HYDRA_TRUSTED_PROXIES": "-1"}, "HYDRA_TRUSTED_PROXIES='-1' is out of range"),
        ({"HYDRA_WORKER_RETENTION_S": "10"}, "HYDRA_WORKER_RETENTION_S (10.0) must exceed HYDRA_WORKER_TIMEOUT_S"),
        ({"HYDRA_WORKER_RETENTION_S": "a week"}, "HYDRA_WORKER_RETENTION_S='a week' is not a valid float"),
        ({"HYDRA_FLOWER_URL": "flower:5555"}, "HYDRA_FLOWER_URL='flower:5555' is not a web address"),
        ({"HYDRA_FLOWER_URL": "http://admin:secret@flower"}, "(a value with credentials, not shown)"),
    ],
)
def test_bad_values_raise_a_config_error_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert message in str(info.value)


def test_to_env_reproduces_the_same_settings_in_a_child_process() -> None:
    s = Settings.from_env({"HYDRA_REDIS_URL": "redis://127.0.0.1:1/0", "HYDRA_LEASE_S": "7",
                           "HYDRA_BASE_TOKEN_RATE": "2.5", "HYDRA_GRID_AWARE": "false"})
    assert Settings.from_env(s.to_env()) == s


def test_the_password_in_the_redis_url_is_not_shown_in_the_error() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"HYDRA_REDIS_URL": "http://user:s3cret@host"})
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(("raw", "parsed"), [
    ("30/minute", "30/minute"), ("30 per minute", "30/minute"), (" 10 / Hours ", "10/hour"),
    ("100 per 5 minutes", "100/5 minute"), ("off", "off"), ("0", "off"), ("OFF", "off"),
])
def test_rate_limits_are_read_in_several_spellings_and_off_turns_one_off(raw: str, parsed: str) -> None:
    s = Settings.from_env({"HYDRA_RATE_LIMIT_GRID_REPORTS": raw})
    assert s.rate_limit_grid_reports == parsed
    assert Settings.from_env(s.to_env()) == s


def test_rate_limit_defaults_limit_every_open_write_and_leave_reads_alone() -> None:
    s = Settings()
    assert (s.rate_limit_transfers, s.rate_limit_grid_reports, s.rate_limit_enrolment, s.rate_limit_reads) == (
        "30/minute", "60/minute", "10/hour", "off")
    assert s.trusted_proxies == 0
    with pytest.raises(ConfigError, match="HYDRA_RATE_LIMIT_TRANSFERS='lots' is not a rate limit"):
        s.with_(rate_limit_transfers="lots")


def test_worker_retention_and_the_flower_link() -> None:
    s = Settings.from_env({})
    assert (s.worker_retention_s, s.flower_url) == (7 * 86_400, "")
    assert Settings.from_env({"HYDRA_WORKER_RETENTION_S": "0"}).worker_retention_s == 0  # never prune
    assert Settings.from_env({"HYDRA_FLOWER_URL": "https://ops.example.org/flower/"}).flower_url == \
        "https://ops.example.org/flower"
    assert Settings.from_env({"HYDRA_FLOWER_URL": "off"}).flower_url == ""
    assert Settings.from_env({"HYDRA_TEST_ARTIFACTS": "/tmp/shots"}) == Settings()  # the test suite's, not a setting


def test_hydra_up_links_its_own_flower_only_on_loopback_and_never_over_the_operators_choice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra_tasks.console import _own_flower_link

    monkeypatch.delenv("HYDRA_FLOWER_URL", raising=False)
    assert _own_flower_link("127.0.0.1", 5555) == "http://127.0.0.1:5555"
    assert _own_flower_link("0.0.0.0", 5555) == ""  # remote visitors cannot reach a Flower on 127.0.0.1
    monkeypatch.setenv("HYDRA_FLOWER_URL", "off")
    assert _own_flower_link("127.0.0.1", 5555) == ""
    monkeypatch.setenv("HYDRA_FLOWER_URL", "https://flower.example.org")
    assert _own_flower_link("127.0.0.1", 5555) == ""  # the webapp reads the operator's own from the env
