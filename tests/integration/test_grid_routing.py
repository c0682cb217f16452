"""Grid-aware routing end to end: two real workers on grids of very different carbon intensity
(eu-north draws from Sweden's grid, ~23 gCO2/kWh; ap-south from India's, ~614)."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import pytest

from hydra_tasks import compute, keys, metrics
from hydra_tasks.trust import identity
from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.grid.site import signed_report
from hydra_tasks.jobs.submit import submit_job
from hydra_tasks.stack import LocalStack
from hydra_tasks.worker.registry import list_workers
from support import running_stack, wait_for_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # A worker counts as live for 15 s after its last heartbeat here, not FAST's 3 s. The home-solar test
    # failed rarely in full-suite runs with chunks on both workers while the threshold admitted only the
    # clean one; the likeliest cause (not proven) is the idle clean worker's heartbeats waiting at a loaded
    # intake for over 3 s, so that a plan saw only the dirty worker and booked it.
    # These tests are about where work goes among live workers, not about noticing silent ones.
    with running_stack(tmp_path_factory.mktemp("grid"), {"eu-north": 1, "ap-south": 1}, grid_aware=True,
                       target_chunk_s=0.4, min_chunk_s=0.1, worker_timeout_s=15.0) as stack:
        yield stack


def units_by_region(job: dict[str, Any]) -> dict[str, int]:
    return {w.split("@")[0].rsplit("-", 1)[0]: v.units for w, v in job.workers.items()}


def run_pi(app: HydraCelery, seconds: float, *, deadline_in_s: float | None = None,
           of_fastest: bool = False, watch: Callable[[str], None] | None = None,
           delay_weight: float | None = None) -> dict[str, Any]:
    """A π job of about ``seconds`` on the slowest calibration (or on the fastest measured speed)."""
    workers = list_workers(app.redis)
    speed = max(w.rate("pi") for w in workers) if of_fastest else min(w.pi_samples_per_s for w in workers)
    samples, seed = int(speed * seconds), int(time.time()) % 1000
    spec: dict[str, Any] = {"kind": "pi", "params": {"samples": samples, "seed": seed}}
    if deadline_in_s is not None:
        spec["deadline"] = time.time() + deadline_in_s
    if delay_weight is not None:
        spec["delay_weight"] = delay_weight
    job_id = submit_job(app, spec).id
    if watch is not None:
        watch(job_id)
    job = wait_for_job(app, job_id)
    assert job.state == "done" and job.result["hits"] == compute.pi_hits(seed, 0, samples)
    return job


def thresholds_while_cutting(app: HydraCelery, seen: list[tuple[float, str | None]]) -> Callable[[str], None]:
    """A ``run_pi`` watcher: appends (time, carbon_threshold) while the job still has ranges to cut."""
    def watch(job_id: str) -> None:
        while True:
            state, cursor, total, threshold = app.redis.hmget(keys.job(job_id), "state", "cursor", "units_total",
                                                              "carbon_threshold")
            if state in ("done", "failed", "cancelled"):
                return
            if threshold is not None and int(cursor or 0) < int(total or 0):
                seen.append((time.time(), threshold))
            time.sleep(0.02)
    return watch


def live_view(app: HydraCelery) -> list[tuple[Any, ...]]:
    """Each worker as the control plane sees it now: id, reported zone and share, state, s since its last beat."""
    now = time.time()
    return [(w.worker_id, w.grid_zone, w.grid_renewable_share, w.state.value, round(now - w.last_seen, 1))
            for w in list_workers(app.redis)]


def merge_timeline(app: HydraCelery, job: Any) -> list[tuple[str, float, int]]:
    """Which worker merged which chunk when (s after the job started)."""
    return [(e["worker"].split("@")[0], round(e["t"] - (job.started_at or 0), 2), e["units"])
            for e in metrics.job_log(app.redis, job.id)]


def test_a_job_without_deadline_uses_both_regions_clean_first(app: HydraCelery) -> None:
    job = run_pi(app, 3.0)
    used = units_by_region(job)
    assert used.get("eu-north", 0) > 0 and used.get("ap-south", 0) > 0  # nobody is starved
    carbon = job.sustainability
    # Using all capacity is what carbon-blind routing does too, so the carbon is about the same.
    assert carbon["carbon_g"] > 0 and carbon["carbon_g"] == pytest.approx(carbon["counterfactual_g"], rel=0.3)


def test_a_deferrable_job_runs_only_where_the_grid_is_clean(app: HydraCelery) -> None:
    # The threshold the dispatcher applied while it was still cutting work (a re-plan after the last
    # range was cut changes no routing; in one CI run the final value read 614 with every unit on
    # eu-north, cause not found: the thresholds seen while cutting are what this checks).
    seen: list[tuple[float, str | None]] = []
    job = run_pi(app, 1.5, deadline_in_s=3600, watch=thresholds_while_cutting(app, seen))
    # the dirty worker was idle, not used (the message: what the control plane saw, should this fail)
    assert units_by_region(job) == {"eu-north": job.units_total}, (
        sorted({t for _, t in seen}), live_view(app), merge_timeline(app, job))
    assert seen and {float(t) for _, t in seen} == {23.0}, (seen[:5], seen[-5:], job.carbon_threshold)
    carbon = job.sustainability
    assert carbon["saved_fraction"] > 0.8  # 23 g instead of the ~318 g capacity-weighted mean


def test_a_delay_weight_is_kept_with_the_job_and_a_clean_hour_now_needs_no_waiting(app: HydraCelery) -> None:
    # Intensities here are the same every hour, so clean capacity now is the cheapest slot whatever an hour
    # of waiting costs: the job still runs only on the clean worker (tests/unit/test_shifting.py has the
    # hours that differ).
    seen: list[tuple[float, str | None]] = []
    job = run_pi(app, 1.0, deadline_in_s=3600, delay_weight=40.0, watch=thresholds_while_cutting(app, seen))
    assert job.delay_weight == 40.0 and job.to_json()["delay_weight"] == 40.0
    assert units_by_region(job) == {"eu-north": job.units_total}, (sorted({t for _, t in seen}), live_view(app))


def test_a_worker_reporting_home_solar_becomes_the_clean_choice(app: HydraCelery, stack: LocalStack) -> None:
    from hydra_webapp import create_app as create_webapp

    web = create_webapp(stack.child_settings().with_(api_token="t")).test_client()
    [dirty] = [w for w in list_workers(app.redis) if w.region == "ap-south"]
    key = identity.load_key(stack.settings.data_dir / "keys" / "ap-south-1.key")  # the worker's own key
    response = web.post("/api/update_grid_info", json=signed_report(key, dirty.worker_id, "FR", 0.9))
    assert response.status_code == 200, response.get_json()
    # Both have passed enough audits to audit each other's results. This test failed in about 1 of 5 full
    # runs until 2026-12-04: once the eu-north worker had passed 50 audits (how soon depended on how the
    # earlier tests' chunks fell), the audits of ap-south's results went to it, on 23 g power, with the
    # job's threshold at 3.3 g. An audit is the job's work too: it keeps to the threshold, and with no
    # auditor that clean it is settled on the control plane.
    for worker in list_workers(app.redis):
        app.redis.hset(keys.worker(worker.worker_id), "audits_passed", 100)
    applied: list[tuple[float, str | None]] = []
    job = run_pi(app, 1.5, deadline_in_s=3600, watch=thresholds_while_cutting(app, applied))
    # FR at 10% from the grid: ~3.3 g (the message says what the control plane saw, should this fail)
    assert units_by_region(job) == {"ap-south": job.units_total}, (
        job.carbon_threshold, sorted({t for _, t in applied}), live_view(app), merge_timeline(app, job))
    requested, local = app.redis.hmget(keys.job(job.id), "audits_requested", "audits_local")
    assert int(requested or 0) > 0 and local == requested  # audited, here rather than on dirty power
    assert app.redis.zrange(keys.JOBS_DEADLINES, 0, -1) in ([], [job.id])  # ended jobs leave the index


def test_a_deadline_too_close_to_wait_for_means_running_everywhere_at_once(app: HydraCelery) -> None:
    # The plan keeps 30 s in reserve before a deadline, so 31 s leaves 1 s, and the job needs 3 s
    # even on the fastest worker: no time to be choosy, the dirty worker is used too (with a 1 h
    # deadline it was not, above).
    job = run_pi(app, 3.0, deadline_in_s=31, of_fastest=True)
    used = units_by_region(job)
    assert used.get("eu-north", 0) > 0 and used.get("ap-south", 0) > 0
