"""The `hydra` command against a real stack, and `hydra demo` start to finish (also on Ctrl-C)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from hydra_tasks import compute, keys
from hydra_tasks.stack import LocalStack
from support import free_port, running_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory.mktemp("cli"), {"eu-west": 1}, pi_chunk_samples=5_000_000) as stack:
        yield stack


def hydra(stack: LocalStack, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hydra_tasks", *args], env=stack.env(), capture_output=True,
                          text=True, timeout=timeout)


def test_submit_wait_prints_the_finished_pi_job_as_json(stack: LocalStack) -> None:
    out = hydra(stack, "submit", "pi", "--samples", "2e7", "--seed", "11", "--wait")
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    assert job["state"] == "done" and job["result"]["hits"] == compute.pi_hits(11, 0, 20_000_000)


def test_submit_mandelbrot_wait_writes_the_png(stack: LocalStack, tmp_path: Path) -> None:
    png = tmp_path / "m.png"
    out = hydra(stack, "submit", "mandelbrot", "--width", "120", "--height", "80", "--max-iter", "100", "--wait",
                "--out", str(png))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["image_path"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_exits_2_with_a_clear_message_and_stores_nothing(stack: LocalStack) -> None:
    before = stack.client().zcard(keys.JOBS)
    out = hydra(stack, "submit", "pi", "--samples", "-5")
    assert out.returncode == 2
    assert "'samples'=-5 is out of range" in out.stderr and "Traceback" not in out.stderr
    out = hydra(stack, "submit", "mandelbrot", "--width", "20000", "--height", "20000")
    assert out.returncode == 2 and "out of range" in out.stderr
    assert stack.client().zcard(keys.JOBS) == before


def test_status_and_cancel_work_on_a_running_job(stack: LocalStack) -> None:
    job = json.loads(hydra(stack, "submit", "pi", "--samples", "1e11").stdout)
    status = json.loads(hydra(stack, "status", job["id"]).stdout)
    assert status["id"] == job["id"] and status["state"] in ("queued", "running")
    table = hydra(stack, "status")
    assert job["id"] in table.stdout and "eu-west-1@" in table.stdout
    cancelled = hydra(stack, "cancel", job["id"])
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["state"] == "cancelled"
    again = hydra(stack, "cancel", job["id"])
    assert again.returncode == 2 and "already cancelled" in again.stderr
    missing = hydra(stack, "status", "0123456789abcdef")
    assert missing.returncode == 2 and "No job '0123456789abcdef'" in missing.stderr


def test_commands_without_a_reachable_redis_say_how_to_fix_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env["HYDRA_DATA_DIR"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-m", "hydra_tasks", "status"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "HYDRA_REDIS_URL is not set and no embedded Redis is running" in out.stderr


def _descendants_alive(pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if p.is_running()]
    except psutil.NoSuchProcess:
        return []


def _processes_using(data_dir_prefix: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if any(data_dir_prefix in part for part in p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_demo_runs_both_jobs_prints_a_summary_and_stops_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env.update(HYDRA_DATA_DIR=str(tmp_path / "data"), COLUMNS="120")
    out = subprocess.run([sys.executable, "-m", "hydra_tasks", "demo", "--samples", "2e8", "--width", "240",
                          "--height", "180", "--max-iter", "200", "--out", str(tmp_path / "demo.png")],
                         env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    for text in ("π estimate", "95% CI", "Mandelbrot", "work per worker", "eu-west-1@", "us-east-1@",
                 "demo wall time"):
        assert text in out.stdout
    assert (tmp_path / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert _processes_using(str(tmp_path / "data")) == []


def test_ctrl_c_during_the_demo_stops_every_process_it_started(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env.update(HYDRA_DATA_DIR=str(tmp_path / "data"))
    demo = subprocess.Popen([sys.executable, "-m", "hydra_tasks", "demo", "--samples", "1e12"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 120
    assert demo.stdout is not None
    for line in demo.stdout:
        if "stack up" in line or time.monotonic() > deadline:
            break
    time.sleep(1.5)  # the jobs are running now
    children = _descendants_alive(demo.pid)
    assert any("redis-server" in p.name() for p in children)
    assert len(children) >= 4  # redis, control worker, two region workers (+ pool processes)
    demo.send_signal(signal.SIGINT)
    rest, _ = demo.communicate(timeout=60)
    assert demo.returncode != 0 and "interrupted" in rest
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert alive == []


def test_up_serves_dashboard_and_flower_runs_jobs_and_stops_on_double_ctrl_c(tmp_path: Path) -> None:
    import requests

    from support import wait_for

    web, flower = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env.update(HYDRA_DATA_DIR=str(tmp_path / "data"))
    up = subprocess.Popen([sys.executable, "-m", "hydra_tasks", "up", "--web-port", str(web), "--flower-port",
                           str(flower), "--regions", "eu-west"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        def get(url: str) -> requests.Response | None:
            try:
                return requests.get(url, timeout=2)
            except requests.ConnectionError:
                return None

        wait_for(lambda: (r := get(f"http://127.0.0.1:{web}/healthz")) is not None and r.json()["redis"],
                 timeout_s=90, what="the dashboard")
        wait_for(lambda: (r := get(f"http://127.0.0.1:{flower}/healthcheck")) is not None and r.text == "OK",
                 timeout_s=60, what="Flower")
        page = requests.get(f"http://127.0.0.1:{web}/", timeout=10).text  # the header links to this Flower
        assert f'id="flower-link" href="http://127.0.0.1:{flower}"' in page
        token = (tmp_path / "data" / "api_token").read_text().strip()
        created = requests.post(f"http://127.0.0.1:{web}/api/jobs", timeout=10,
                                headers={"Authorization": f"Bearer {token}"},
                                json={"kind": "pi", "params": {"samples": 30_000_000, "seed": 8}})
        assert created.status_code == 201, created.text
        url = f"http://127.0.0.1:{web}/api/jobs/{created.json()['id']}"
        job = wait_for(lambda: (j := requests.get(url, timeout=5).json())["state"] == "done" and j,
                       timeout_s=60, what="the job")
        assert job["result"]["hits"] == compute.pi_hits(8, 0, 30_000_000)
        children = _descendants_alive(up.pid)
        assert len(children) >= 5  # redis, control, worker, webapp, flower
    finally:
        up.send_signal(signal.SIGINT)
        time.sleep(0.3)
        up.send_signal(signal.SIGINT)  # an impatient second Ctrl-C must not abort the cleanup
        up.communicate(timeout=60)
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert alive == []


def test_hydra_worker_joins_a_region_and_takes_work(stack: LocalStack) -> None:
    from support import wait_for

    from hydra_tasks.worker.registry import list_workers

    worker = subprocess.Popen([sys.executable, "-m", "hydra_tasks", "worker", "--region", "eu-north", "--name",
                               "volunteer", "-c", "1"], env=stack.env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        client = stack.client()
        wait_for(lambda: any(w.region == "eu-north" and w.worker_id.startswith("volunteer@")
                             for w in list_workers(client)), timeout_s=60, what="the volunteer to register")
        # About 2 s of work: enough that the new volunteer's first chunks are not all overtaken by
        # straggler backups on the warm eu-west worker (a tiny job can finish before it gets going).
        out = hydra(stack, "submit", "pi", "--samples", "3e9", "--seed", "3", "--wait")
        job = json.loads(out.stdout)
        # eu-north (Sweden, ~23 g/kWh) is the cleanest region present: the grid-aware router uses it first.
        assert job["state"] == "done" and any(w.startswith("volunteer@") for w in job["workers"])
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    # A clean shutdown says goodbye: the intake applies it (asynchronously, like every message), and a
    # heartbeat the volunteer sent just before it does not bring it back (tests/integration/test_intake.py).
    stack.wait_for_log("intake", "'offline'", timeout_s=15)

    def state() -> str:
        return {w.worker_id.split("@")[0]: w.state.value for w in list_workers(stack.client())}["volunteer"]
    wait_for(lambda: state() == "offline", timeout_s=15, what="the volunteer to be offline")
    time.sleep(1.0)  # a late heartbeat, if one was on its way, has been applied by now
    assert state() == "offline"


def test_a_volunteer_moves_its_key_to_another_machine_with_export_and_import(tmp_path: Path) -> None:
    from hydra_tasks.trust import identity

    base = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    laptop = {**base, "HYDRA_DATA_DIR": str(tmp_path / "laptop")}
    desktop = {**base, "HYDRA_DATA_DIR": str(tmp_path / "desktop")}
    key = identity.load_or_create(tmp_path / "laptop" / "worker.key")  # as a worker's first start does

    def run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hydra_tasks", *args], env=env, input=stdin,
                              capture_output=True, text=True, timeout=60)

    exported = run(laptop, "key", "export")
    assert exported.returncode == 0 and "secret" in exported.stderr
    imported = run(desktop, "key", "import", stdin=exported.stdout)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["account"] == identity.public_hex(key)
    assert json.loads(run(desktop, "key", "show").stdout)["account"] == identity.public_hex(key)
    assert (tmp_path / "desktop" / "worker.key").stat().st_mode & 0o077 == 0
    other = identity.export_text(identity.load_or_create(tmp_path / "other.key"))
    refused = run(desktop, "key", "import", stdin=other)
    assert refused.returncode == 2 and "export it first" in refused.stderr
    assert json.loads(run(desktop, "key", "show").stdout)["account"] == identity.public_hex(key)  # unchanged
    garbage = run(desktop, "key", "import", stdin="not a key")
    assert garbage.returncode == 2 and "not a Hydra key" in garbage.stderr
