"""Both job kinds end to end: real Redis, a real control worker with beat, and real region workers."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from hydra_tasks import compute, keys
from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.jobs import store
from hydra_tasks.jobs.mandelbrot import decode_counts
from hydra_tasks.jobs.submit import job_png, submit_job
from hydra_tasks.stack import LocalStack
from hydra_tasks.worker.registry import list_workers

from support import free_port, running_stack, wait_for, wait_for_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory.mktemp("e2e"), {"eu-west": 1, "us-east": 1},
                       # bundle_s=0: each ~8 ms chunk travels alone, so both workers take part in the 12-chunk
                       # job (in bundles of 7, one worker's window would hold the whole job)
                       adaptive=False, pi_chunk_samples=5_000_000, tile_px=64, bundle_s=0.0) as stack:
        yield stack



def test_workers_register_with_their_region_and_a_measured_speed(app: HydraCelery) -> None:
    workers = {w.region: w for w in list_workers(app.redis)}
    assert set(workers) == {"eu-west", "us-east"}
    assert all(w.pi_samples_per_s > 1e6 and w.mandelbrot_iters_per_s > 1e6 for w in workers.values())
    seen = {r: w.last_seen for r, w in workers.items()}
    wait_for(lambda: all(w.last_seen > seen[w.region] for w in list_workers(app.redis)),
             timeout_s=10, what="heartbeats")


def test_a_pi_job_runs_on_both_regions_and_counts_exactly_the_kernels_hits(app: HydraCelery) -> None:
    job = submit_job(app, {"kind": "pi", "params": {"samples": 60_000_000, "seed": 42}})
    job = wait_for_job(app, job.id)
    assert job.state == "done", job
    result = job.result
    assert result["hits"] == compute.pi_hits(42, 0, 60_000_000)
    assert result["samples"] == 60_000_000 and job.chunks_done == job.chunks_total == 12
    assert result["ci95"][0] < 3.14159265 < result["ci95"][1]
    assert {w.split("@")[0] for w in job.workers} == {"eu-west-1", "us-east-1"}
    assert sum(w.chunks for w in job.workers.values()) == 12


def test_a_mandelbrot_job_produces_the_reference_counts_and_a_png(app: HydraCelery, tmp_path: Path) -> None:
    params = {"width": 300, "height": 200, "max_iter": 300, "center_x": -0.75, "center_y": 0.1, "span": 3.0}
    job = wait_for_job(app, submit_job(app, {"kind": "mandelbrot", "params": params}).id)
    assert job.state == "done", job
    p = store.get_job(app.redis, job.id).params
    whole = compute.mandelbrot_counts(xmin=p["xmin"], ymax=p["ymax"], dx=p["dx"], dy=p["dy"], col0=0, row0=0,
                                      width=300, height=200, max_iter=300)
    counts = decode_counts(app.redis.get(keys.job_counts(job.id)), 200, 300)
    assert (counts == whole).all()
    png = job_png(app, job.id)
    assert png is not None
    image = Image.open(io.BytesIO(png))
    assert image.size == (300, 200) and image.mode == "RGB"
    colours = np.unique(np.asarray(image).reshape(-1, 3), axis=0)
    assert len(colours) > 20  # a colour map, not a flat image


def test_a_cancelled_job_stops_progressing(app: HydraCelery) -> None:
    job = submit_job(app, {"kind": "pi", "params": {"samples": 5_000_000_000, "seed": 1}})
    wait_for(lambda: store.get_job(app.redis, job.id).chunks_done >= 2, timeout_s=60, what="progress")
    store.cancel_job(app.redis, job.id)
    time.sleep(1.0)
    done_after_cancel = store.get_job(app.redis, job.id).chunks_done
    time.sleep(2.0)
    job = store.get_job(app.redis, job.id)
    assert job.state == "cancelled" and job.chunks_done == done_after_cancel < job.chunks_total
    assert not [m for m in app.redis.zrange(keys.LEASES, 0, -1) if m.startswith(job.id)]


def test_a_higher_priority_job_is_served_first(app: HydraCelery) -> None:
    low = submit_job(app, {"kind": "pi", "params": {"samples": 200_000_000, "seed": 3}, "priority": 1})
    high = submit_job(app, {"kind": "pi", "params": {"samples": 20_000_000, "seed": 4}, "priority": 9})
    high = wait_for_job(app, high.id)
    low_now = store.get_job(app.redis, low.id)
    assert high.state == "done" and low_now.state == "running"
    wait_for_job(app, low.id)


class _Evil:
    """Unpickling this runs a shell command: the marker file appears only if a worker accepts pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_pickle_message_is_refused_and_runs_no_code(app: HydraCelery, stack: LocalStack, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    app.send_task("hydra.compute_chunk", args=[_Evil(marker), 1], queue=keys.region_queue("eu-west"),
                  serializer="pickle")
    stack.wait_for_log("eu-west-1", "Refusing to deserialize untrusted content of type pickle", timeout_s=20)
    assert not marker.exists()
    assert stack.procs["eu-west-1"].alive
    job = wait_for_job(app, submit_job(app, {"kind": "pi", "params": {"samples": 10_000_000, "seed": 5}}).id)
    assert job.state == "done"  # the worker goes on serving JSON tasks


def test_flower_sees_the_workers_and_their_tasks(app: HydraCelery, stack: LocalStack) -> None:
    import requests

    port = free_port()
    stack.start_flower(port=port)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return requests.get(f"{base}/healthcheck", timeout=2).text == "OK"
        except requests.ConnectionError:
            return False

    wait_for(healthy, timeout_s=60, what="Flower to start")

    def task_metrics() -> str | None:
        # Workers send task events only once Flower has switched them on (every 5 s), so keep
        # running small jobs until Flower has seen one.
        wait_for_job(app, submit_job(app, {"kind": "pi", "params": {"samples": 10_000_000, "seed": 6}}).id)
        text = requests.get(f"{base}/metrics", timeout=5).text
        # short chunks travel in bundles (hydra.compute_bundle), longer ones alone (hydra.compute_chunk)
        return text if 'task="hydra.compute_chunk"' in text or 'task="hydra.compute_bundle"' in text else None

    metrics = wait_for(task_metrics, timeout_s=40, what="Flower task metrics", poll_s=0.5)
    assert 'type="task-succeeded"' in metrics
    assert "eu-west-1@" in metrics and "us-east-1@" in metrics
