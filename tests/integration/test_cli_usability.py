"""The `hydra` command against a stack started by `hydra up`, as a user runs it: no --url needed, grid-info
signs with the named worker's key, status shows instruction sets, --wait reports at once, relative
deadlines, --version."""

from __future__ import annotations

import importlib.metadata
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from hydra_tasks import compute
from hydra_tasks.celery_app import create_app
from hydra_tasks.jobs import store
from hydra_tasks.settings import Settings
from hydra_tasks.trust import identity
from hydra_tasks.worker.registry import WorkerInfo, list_workers
from support import free_port, wait_for

pytestmark = pytest.mark.integration


class Up:
    def __init__(self, data_dir: Path, env: dict[str, str], web_port: int) -> None:
        self.data_dir, self.env, self.web_port = data_dir, env, web_port
        self.app = create_app(Settings().with_(data_dir=data_dir))

    def hydra(self, *args: str, env: dict[str, str] | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hydra_tasks", *args], env=env or self.env, capture_output=True,
                              text=True, timeout=timeout, cwd=self.data_dir)

    def worker(self) -> WorkerInfo:
        return next(w for w in list_workers(self.app.redis) if w.worker_id.startswith("eu-west-1@"))


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`hydra up` on random ports; the CLI is then used with only HYDRA_DATA_DIR set, as a user would."""
    data_dir = tmp_path_factory.mktemp("up") / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env.update(HYDRA_DATA_DIR=str(data_dir), COLUMNS="200")
    web = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hydra_tasks", "up", "--web-port", str(web), "--flower-port",
                             str(free_port()), "--regions", "eu-west"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=data_dir.parent)
    try:
        def healthy() -> bool:
            try:
                return bool(requests.get(f"http://127.0.0.1:{web}/healthz", timeout=2).json()["redis"])
            except (requests.RequestException, ValueError):
                return False

        wait_for(healthy, timeout_s=120, what="the dashboard of `hydra up`")
        stack = Up(data_dir, env, web)
        wait_for(lambda: any(w.worker_id.startswith("eu-west-1@") and w.public_key
                             for w in list_workers(stack.app.redis)), timeout_s=60, what="the region worker")
        yield stack
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_url_options_find_the_webapp_that_hydra_up_runs(up: Up) -> None:
    out = up.hydra("tokens", "balance", up.worker().worker_id)  # no --url: the port is not 5000
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["account"] == up.worker().public_key


def test_hydra_url_chooses_the_webapp(up: Up) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    out = up.hydra("tokens", "balance", up.worker().worker_id, env={**up.env, "HYDRA_URL": closed})
    assert out.returncode != 0 and f"cannot reach {closed}" in out.stderr, out.stderr
    ok = up.hydra("tokens", "balance", up.worker().worker_id,
                  env={**up.env, "HYDRA_URL": f"http://127.0.0.1:{up.web_port}/"})
    assert ok.returncode == 0, ok.stderr


def test_grid_info_signs_with_the_key_of_the_worker_it_names(up: Up) -> None:
    worker = up.worker()
    out = up.hydra("grid-info", "--worker", worker.worker_id, "--zone", "FR", "--renewable-share", "0.5",
                   "--url", f"http://127.0.0.1:{up.web_port}")  # the key is the point here, not the URL
    assert out.returncode == 0, out.stderr
    assert up.worker().grid_zone == "FR"


def test_a_refused_grid_report_says_which_key_signed_it_and_how_to_choose_another(up: Up, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    identity.load_or_create(other)
    out = up.hydra("grid-info", "--worker", up.worker().worker_id, "--zone", "DE", "--url",
                   f"http://127.0.0.1:{up.web_port}", env={**up.env, "HYDRA_KEY_FILE": str(other)})
    assert out.returncode != 0 and "401" in out.stderr, out.stderr
    assert f"signed with the key in {other}" in out.stderr and "HYDRA_KEY_FILE=" in out.stderr, out.stderr


def test_status_shows_each_workers_instruction_set(up: Up) -> None:
    out = up.hydra("status")
    assert out.returncode == 0, out.stderr
    assert "ISA" in out.stdout
    row = next(line for line in out.stdout.splitlines() if "eu-west-1@" in line)
    assert compute.build_info()["isa"] in row


def test_submit_accepts_a_deadline_from_now_and_a_refused_one_shows_the_time_now(up: Up) -> None:
    out = up.hydra("submit", "pi", "--samples", "1e6", "--deadline", "+2h")
    assert out.returncode == 0, out.stderr
    assert abs(json.loads(out.stdout)["deadline_ts"] - (time.time() + 7_200)) < 60
    past = up.hydra("submit", "pi", "--samples", "1e6", "--deadline", "2026-01-01T06:00:00Z")
    assert past.returncode == 2 and "it is now 20" in past.stderr and "+2h" in past.stderr, past.stderr


def test_submit_wait_prints_the_job_id_at_once_and_only_the_result_on_stdout(up: Up) -> None:
    out = up.hydra("submit", "pi", "--samples", "2e7", "--seed", "4", "--wait")
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    assert f"hydra: job {job['id']} submitted" in out.stderr
    assert job["result"]["hits"] == compute.pi_hits(4, 0, 20_000_000)


def test_submit_wait_shows_the_job_id_before_the_job_ends_and_a_progress_bar_on_a_terminal(up: Up) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "hydra_tasks", "submit", "pi", "--samples", "3e9", "--seed", "6",
                             "--wait"], env={**up.env, "TERM": "xterm-256color", "COLUMNS": "120"},
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, cwd=up.data_dir)
    os.close(slave)
    seen, state_when_shown = b"", None
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 120)
            if not ready:
                raise AssertionError(f"no terminal output for 120 s: {seen!r}")
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            seen += data
            found = re.search(rb"hydra: job ([0-9a-f]+) submitted", seen)
            if found and state_when_shown is None:
                state_when_shown = store.get_job(up.app.redis, found.group(1).decode()).state
        stdout, _ = proc.communicate(timeout=120)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, seen.decode(errors="replace")
    assert state_when_shown in ("queued", "running"), state_when_shown
    text = seen.decode(errors="replace")
    assert "━" in text and "chunks" in text, text  # rich's bar and the chunk counter
    job = json.loads(stdout)
    assert job["state"] == "done" and job["result"]["hits"] == compute.pi_hits(6, 0, 3_000_000_000)


def test_version_prints_the_installed_version() -> None:
    out = subprocess.run([sys.executable, "-m", "hydra_tasks", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"hydra {importlib.metadata.version('hydra-volunteer')}"


def test_help_lists_every_command_under_the_reader_who_runs_it() -> None:
    from hydra_tasks.cli import COMMAND_SECTIONS, main

    out = subprocess.run([sys.executable, "-m", "hydra_tasks", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    sections = [title for title, _ in COMMAND_SECTIONS]
    assert [line[:-1] for line in out.stdout.splitlines() if line[:-1] in sections] == sections
    assert "Other commands" not in out.stdout  # a new command must be given a section
    in_sections = {name for _, names in COMMAND_SECTIONS for name in names}
    assert set(main.commands) == in_sections, (set(main.commands) ^ in_sections)
    volunteers = out.stdout.split("\nVolunteers:\n")[1].split("\nOperators")[0]
    assert {"worker", "key", "tokens", "profile", "dashboard"} <= {line.split()[0] for line in volunteers.splitlines()
                                                                     if line.strip()}
