"""`hydra up` says it is up only when it is, and keeps its parts running: a dead worker or a dead
Redis is restarted (and said so), and SIGTERM still stops everything it started.

Every test runs the real `hydra up` command with real Redis, Celery, Flask and Flower processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest
import redis

from hydra_tasks import keys
from hydra_tasks.embedded import running_url
from support import free_port, wait_for

QUICK = {"HYDRA_HEARTBEAT_S": "0.5", "HYDRA_WORKER_TIMEOUT_S": "3", "HYDRA_SWEEP_INTERVAL_S": "0.5",
         "HYDRA_LEASE_S": "4"}


class Up:
    """A running `hydra up` and what it printed so far."""

    def __init__(self, tmp_path: Path, *, web_port: int) -> None:
        self.data_dir = tmp_path / "data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
        self.env.update(QUICK, HYDRA_DATA_DIR=str(self.data_dir), COLUMNS="200")
        self.output_path = tmp_path / "up.out"
        with open(self.output_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hydra_tasks", "up", "--web-port", str(web_port), "--flower-port",
                 str(free_port()), "--regions", "eu-west"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait_for_output(self, text: str, *, timeout_s: float) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None and text not in self.output:
                raise AssertionError(f"hydra up exited ({self.proc.returncode}) before printing {text!r}:\n"
                                     f"{self.output}")
            return text in self.output

        wait_for(seen, timeout_s=timeout_s, what=f"hydra up to print {text!r}")

    def redis(self) -> redis.Redis:
        url = running_url(self.data_dir / "redis")
        assert url is not None, "no embedded Redis is running"
        return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)

    def redis_pid_and_port(self) -> tuple[int, int]:
        info = json.loads((self.data_dir / "redis" / "server.json").read_text())
        return int(info["pid"]), int(info["port"])

    def terminate_and_check_nothing_is_left(self) -> None:
        started = _descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        gone, alive = psutil.wait_procs(started, timeout=15)
        assert alive == [], f"still running after SIGTERM: {alive}"


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if p.is_running()]
    except psutil.NoSuchProcess:
        return []


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    running = Up(tmp_path, web_port=free_port())
    try:
        running.wait_for_output("Hydra is up", timeout_s=120)
        yield running
    except BaseException:
        print(f"----- hydra up output -----\n{running.output}")
        raise
    finally:
        if running.proc.poll() is None:
            for p in _descendants(running.proc.pid) + [psutil.Process(running.proc.pid)]:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            running.proc.wait(timeout=30)


def test_up_with_the_web_port_taken_fails_fast_naming_the_port_and_never_says_it_is_up(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        running = Up(tmp_path, web_port=port)
        try:
            running.proc.wait(timeout=60)
        finally:
            if running.proc.poll() is None:
                running.proc.kill()
    output = running.output
    assert running.proc.returncode != 0, output
    assert time.monotonic() - started < 60
    assert str(port) in output and "--web-port" in output, output
    assert "Hydra is up" not in output


def test_a_killed_worker_and_control_worker_are_restarted_work_goes_on_and_redis_keeps_running(up: Up) -> None:
    redis_before = up.redis_pid_and_port()
    old = up.redis().hgetall(_worker_key(up, "eu-west-1"))
    os.killpg(int(old["pid"]), signal.SIGKILL)  # the worker and its pool children
    up.wait_for_output("eu-west-1 exited (code -9, killed by SIGKILL)", timeout_s=30)
    up.wait_for_output("restarting in 1 s (restart 1 of 5", timeout_s=5)
    os.killpg(_group_leader(up, "control@"), signal.SIGKILL)  # the control worker, with beat
    up.wait_for_output("control exited (code -9, killed by SIGKILL)", timeout_s=30)

    def registered_again() -> bool:
        now = up.redis().hgetall(_worker_key(up, "eu-west-1"))
        return now.get("pid") != old["pid"] and now.get("state") == "online" and \
            float(now["last_seen"]) > time.time() - 3
    wait_for(registered_again, timeout_s=45, what="the restarted worker to register")
    up.wait_for_output("control restarted", timeout_s=30)
    done = subprocess.run([sys.executable, "-m", "hydra_tasks", "submit", "pi", "--samples", "1e8", "--wait"],
                          env=up.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and json.loads(done.stdout)["state"] == "done", done.stdout + done.stderr
    assert up.proc.poll() is None, up.output
    assert up.redis_pid_and_port() == redis_before
    up.terminate_and_check_nothing_is_left()


def test_a_killed_redis_is_reported_restarted_on_the_same_port_and_jobs_still_run(up: Up) -> None:
    old_pid, port = up.redis_pid_and_port()
    worker_key = _worker_key(up, "eu-west-1")
    account = up.redis().hget(worker_key, "public_key")  # written once, when the worker registered
    os.kill(old_pid, signal.SIGKILL)
    up.wait_for_output("redis exited (code -9, killed by SIGKILL)", timeout_s=30)
    up.wait_for_output("redis restarted", timeout_s=30)
    new_pid, new_port = up.redis_pid_and_port()
    assert new_port == port and new_pid != old_pid
    assert account and up.redis().hget(worker_key, "public_key") == account  # the state came back from the AOF
    done = subprocess.run([sys.executable, "-m", "hydra_tasks", "submit", "pi", "--samples", "1e8", "--wait"],
                          env=up.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr + up.output
    assert json.loads(done.stdout)["state"] == "done"
    assert up.proc.poll() is None, up.output
    up.terminate_and_check_nothing_is_left()


def _group_leader(up: Up, text: str) -> int:
    """The pid of the process group leader `hydra up` started whose command line contains ``text``."""
    return next(p.pid for p in _descendants(up.proc.pid)
                if text in " ".join(p.cmdline()) and os.getpgid(p.pid) == p.pid)


def _worker_key(up: Up, name: str) -> str:
    client = up.redis()
    worker_id = next(w for w in client.smembers(keys.WORKERS) if w.startswith(name + "@"))
    return keys.worker(worker_id)
