"""Without a reachable Redis, `hydra` and the plain `celery -A hydra_tasks` commands say so in one line
(never with the password) and exit 2, instead of printing a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hydra_tasks.celery_app import HydraCelery
from support import free_port

pytestmark = pytest.mark.integration

CELERY = str(Path(sys.executable).with_name("celery"))
PASSWORD = "s3cret-pw"


def _env(tmp_path: Path, redis_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env["HYDRA_DATA_DIR"] = str(tmp_path)  # empty: no embedded Redis runs for it
    if redis_url is not None:
        env["HYDRA_REDIS_URL"] = redis_url
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90, cwd=cwd)


def _assert_one_clear_line(out: subprocess.CompletedProcess[str], message: str) -> None:
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert message in out.stderr, text
    assert "Traceback" not in text and PASSWORD not in text, text
    assert len(text.strip().splitlines()) <= 5, text


def _down_url() -> str:
    return f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"  # nothing listens there


@pytest.mark.parametrize("args", [["status"], ["status", "0123456789abcdef"], ["submit", "pi", "--samples", "1e6"],
                                  ["cancel", "0123456789abcdef"]])
def test_hydra_commands_with_redis_down_say_where_and_how_to_fix_it_in_one_line(tmp_path: Path,
                                                                                  args: list[str]) -> None:
    url = _down_url()
    out = _run([sys.executable, "-m", "hydra_tasks", *args], _env(tmp_path, url), tmp_path)
    redacted = url.replace(PASSWORD, "**")
    _assert_one_clear_line(out, f"hydra: error: cannot reach Redis at {redacted} (Connection refused); "
                                "start it with `hydra up` or fix HYDRA_REDIS_URL")


@pytest.mark.parametrize("args", [["worker", "-Q", "hydra.region.eu-west"], ["beat"], ["inspect", "ping"], ["status"],
                                  ["purge", "-f"], ["call", "hydra.sweep"]])
def test_celery_commands_without_a_redis_url_say_how_to_get_one_in_one_line(tmp_path: Path, args: list[str]) -> None:
    out = _run([CELERY, "-A", "hydra_tasks", *args], _env(tmp_path, None), tmp_path)
    _assert_one_clear_line(out, "HYDRA_REDIS_URL is not set and no embedded Redis is running")
    assert "Start one with `hydra up`" in out.stderr


@pytest.mark.parametrize("args", [["inspect", "ping"], ["status"], ["purge", "-f"], ["call", "hydra.sweep"],
                                  ["control", "shutdown"]])
def test_celery_client_commands_with_redis_down_exit_2_with_one_line(tmp_path: Path, args: list[str]) -> None:
    out = _run([CELERY, "-A", "hydra_tasks", *args], _env(tmp_path, _down_url()), tmp_path)
    _assert_one_clear_line(out, "cannot reach Redis at redis://:**@127.0.0.1:")


def test_a_bad_setting_stops_a_celery_worker_with_one_line(tmp_path: Path) -> None:
    env = {**_env(tmp_path, _down_url()), "HYDRA_LEASE_S": "soon"}
    out = _run([CELERY, "-A", "hydra_tasks", "worker"], env, tmp_path)
    _assert_one_clear_line(out, "HYDRA_LEASE_S='soon' is not a valid float")


def test_a_celery_worker_waits_for_redis_with_one_line_per_try_and_no_traceback(tmp_path: Path) -> None:
    """A volunteer's worker that starts while Redis is down keeps trying (it never gives up with a
    traceback, as Celery's default 100 tries would after ~50 min), logging why on each try."""
    worker = subprocess.Popen([CELERY, "-A", "hydra_tasks", "worker", "-Q", "hydra.region.eu-west", "-c", "1"],
                              env=_env(tmp_path, _down_url()), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, cwd=tmp_path, start_new_session=True)
    time.sleep(8)  # tries at about 0, 2 and 6 s
    alive = worker.poll() is None
    os.killpg(worker.pid, signal.SIGTERM)
    text, _ = worker.communicate(timeout=60)
    assert alive, text
    assert text.count("Cannot connect to redis://:**@127.0.0.1:") >= 2, text
    assert "Trying again" in text and "Traceback" not in text and PASSWORD not in text, text
    assert "(1/None)" in text, text  # tries without limit (Celery's default stops after 100 with a traceback)


def test_celery_purge_empties_the_queues_of_a_running_redis(redis_only: HydraCelery, tmp_path: Path) -> None:
    """`celery purge` used to recurse until RecursionError while loading the configuration."""
    redis_only.send_task("hydra.sweep", queue="hydra.control")
    env = {**_env(Path(redis_only.settings.data_dir), redis_only.conf.broker_url)}
    out = _run([CELERY, "-A", "hydra_tasks", "purge", "-f"], env, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Purged 1 message" in out.stdout, out.stdout
    assert redis_only.redis.llen("hydra.control") == 0
