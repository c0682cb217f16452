"""Adaptive chunking end to end: two real workers, one capped at 25% CPU, share a π job in
proportion to their measured speeds and finish it together."""

from __future__ import annotations

import json
from typing import Iterator

import pytest

from hydra_tasks import compute, keys
from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.jobs.submit import submit_job
from hydra_tasks.stack import LocalStack
from hydra_tasks.worker.registry import list_workers
from support import running_stack, wait_for_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory.mktemp("adaptive"), {"eu-west": 2}, cpu_limits={"eu-west-2": 25},
                       adaptive=True, target_chunk_s=0.6, min_chunk_s=0.15) as stack:
        yield stack



def test_a_capped_worker_gets_smaller_chunks_and_both_finish_together(app: HydraCelery) -> None:
    workers = {w.worker_id.split("@")[0]: w for w in list_workers(app.redis)}
    assert workers["eu-west-2"].cpu_limit == 25 and workers["eu-west-1"].cpu_limit == 100
    speed = workers["eu-west-1"].pi_samples_per_s + workers["eu-west-2"].pi_samples_per_s
    samples = int(speed * 4.0)  # about 4 s of work for the pair
    job = wait_for_job(app, submit_job(app, {"kind": "pi", "params": {"samples": samples, "seed": 3}}).id)
    assert job.state == "done" and job.result["hits"] == compute.pi_hits(3, 0, samples)

    per_worker = {w.split("@")[0]: v for w, v in job.workers.items()}
    fast, slow = per_worker["eu-west-1"], per_worker["eu-west-2"]
    assert fast.units > 2 * slow.units  # work follows measured speed (about 4:1)
    log = [json.loads(e) for e in app.redis.lrange(keys.job_log(job.id), 0, -1)]
    sizes = {name: [e["units"] for e in log if e["worker"].startswith(name)] for name in ("eu-west-1", "eu-west-2")}
    assert max(sizes["eu-west-1"]) > 2 * max(sizes["eu-west-2"])  # chunks are cut for their worker
    finish = [v.last_ms / 1000 for v in per_worker.values()]
    makespan = job.finished_at - job.started_at
    print(f"fast {fast}, slow {slow}, spread {(max(finish) - min(finish)) / makespan:.1%} of {makespan:.2f}s")
    assert (max(finish) - min(finish)) / makespan < 0.25, (finish, makespan)


def test_a_mandelbrot_job_is_tiled_by_cost_and_the_metrics_show_it(app: HydraCelery, stack: LocalStack) -> None:
    from hydra_webapp import create_app as create_webapp

    params = {"width": 800, "height": 600, "max_iter": 3000, "center_x": -0.7435, "center_y": 0.1314,
              "span": 0.02}
    job = wait_for_job(app, submit_job(app, {"kind": "mandelbrot", "params": params}).id)
    assert job.state == "done" and job.units_done == 800 * 600
    client = create_webapp(stack.child_settings().with_(api_token="t")).test_client()

    tiling = client.get(f"/api/adaptive_tiling_metrics?job={job.id}").get_json()
    [summary] = tiling["jobs"]
    assert len(summary["tiles"]) == job.chunks_done - 1  # every tile but the preview
    areas = [t["pixels"] for t in summary["tiles"]]
    assert max(areas) >= 4 * min(areas)  # balanced by cost, not by area
    print(f"tiles {len(areas)}, median cost error {summary['median_cost_error']:.1%}, "
          f"median time error {summary['median_time_error']}")
    assert summary["median_cost_error"] <= 0.25

    chunking = client.get("/api/adaptive_chunking_metrics?limit=1").get_json()
    assert {w["worker_id"].split("@")[0] for w in chunking["workers"]} == {"eu-west-1", "eu-west-2"}
    assert all(w["reliability"] > 0.5 and w["pi_samples_per_s"] > 0 for w in chunking["workers"])
    [pi_job] = chunking["jobs"]
    assert pi_job["chunks_over_time"] and pi_job["load_imbalance"] is not None
    assert client.get("/api/adaptive_tiling_metrics?limit=0").status_code == 400
