"""Metrics of adaptive chunking and tiling, read from Redis (per-worker models and job chunk logs).

* per worker: measured speed per kind, consistency, reliability, calibration;
* per job: chunk sizes over time (who got how much, how long it took), load imbalance (spread
  of the workers' finish times over the makespan) and, for Mandelbrot, estimated vs actual tile
  cost (iterations) and predicted vs actual tile time.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import redis

from . import keys
from .jobs import store
from .jobs.view import JobView
from .worker.registry import list_workers


def load_imbalance(job: JobView, *, now: float | None = None) -> float | None:
    """(latest − earliest worker finish) / makespan, over the workers that took part."""
    finishes = [w.last_ms / 1000 for w in job.workers.values() if w.last_ms]
    start = job.started_at
    end = job.finished_at or (time.time() if now is None else now)
    if len(finishes) < 2 or not start or end <= start:
        return None
    return (max(finishes) - min(finishes)) / (end - start)


def job_log(client: redis.Redis, job_id: str) -> list[dict[str, Any]]:
    return [json.loads(e) for e in client.lrange(keys.job_log(job_id), 0, -1)]


def _recent(client: redis.Redis, kind: str, job_id: str | None, limit: int) -> list[JobView]:
    if job_id:
        return [store.get_job(client, job_id)]
    jobs = [j for j in store.list_jobs(client, limit=200) if j.kind == kind][:limit]
    return [store.get_job(client, j.id) for j in jobs]


def worker_models(client: redis.Redis) -> list[dict[str, Any]]:
    return [{"worker_id": w.worker_id, "region": w.region, "state": w.state.value, "cpu_limit": w.cpu_limit,
             "pi_samples_per_s": w.rate("pi"), "mandelbrot_iters_per_s": w.rate("mandelbrot"),
             "consistency_pi": w.perf_pi.consistency, "consistency_mandelbrot": w.perf_mandelbrot.consistency,
             "reliability": w.reliability, "chunks_ok": w.ok, "chunks_failed": w.failed,
             "leases_expired": w.expired, "calibrated_pi_samples_per_s": w.pi_samples_per_s}
            for w in list_workers(client)]


def _job_summary(client: redis.Redis, job: JobView) -> dict[str, Any]:
    log = job_log(client, job.id)
    start = job.started_at or 0.0
    return {
        "job_id": job.id, "state": job.state.value, "chunks": job.chunks_done, "backups": job.backups,
        "makespan_s": job.wall_s, "load_imbalance": load_imbalance(job),
        "chunks_over_time": [{"t_s": round(e["t"] - start, 4), "worker": e["worker"], "units": e["units"],
                              "elapsed_s": e["elapsed_s"]} for e in log],
    }


def sustainability_metrics(client: redis.Redis, *, job_id: str | None = None, limit: int = 5) -> dict[str, Any]:
    """Energy, carbon, the carbon-blind counterfactual and renewable kWh: overall and per job."""
    from .grid.accounting import totals

    if job_id:
        store.get_job(client, job_id)  # JobNotFound for an unknown id
        ids = [job_id]
    else:
        ids = [j.id for j in store.list_jobs(client, limit=limit)]
    failures = [json.loads(f) for f in client.lrange(keys.GRID_FAILURES, 0, 19)]
    return {"overall": totals(client.hgetall(keys.SUSTAINABILITY)),
            "jobs": [{"job_id": i, **totals(client.hgetall(keys.job(i)))} for i in ids],
            "carbon_provider_failures": failures}


def chunking_metrics(client: redis.Redis, *, job_id: str | None = None, limit: int = 5) -> dict[str, Any]:
    return {"workers": worker_models(client),
            "jobs": [_job_summary(client, job) for job in _recent(client, "pi", job_id, limit)]}


def tiling_metrics(client: redis.Redis, *, job_id: str | None = None, limit: int = 5) -> dict[str, Any]:
    jobs = []
    for job in _recent(client, "mandelbrot", job_id, limit):
        summary = _job_summary(client, job)
        tiles = [e for e in job_log(client, job.id) if "est_cost" in e]
        cost_errors = [abs(e["est_cost"] - e["work"]) / max(e["work"], 1.0) for e in tiles]
        time_errors = [abs(e["predicted_s"] - e["elapsed_s"]) / max(e["elapsed_s"], 1e-6)
                       for e in tiles if "predicted_s" in e]
        summary.update(
            tiles=[{"chunk": e["chunk"], "worker": e["worker"], "pixels": e["units"], "est_cost": e["est_cost"],
                    "actual_cost": e["work"], "predicted_s": e.get("predicted_s"), "elapsed_s": e["elapsed_s"]}
                   for e in tiles],
            median_cost_error=statistics.median(cost_errors) if cost_errors else None,
            median_time_error=statistics.median(time_errors) if time_errors else None,
        )
        summary.pop("chunks_over_time")
        jobs.append(summary)
    return {"workers": worker_models(client), "jobs": jobs}


def security_metrics(client: redis.Redis) -> dict[str, Any]:
    """What the control plane refused: intake messages (by reason, :class:`hydra_tasks.intake.Dropped`),
    results that named a keyed worker without its signature, and the exact spot checks of results
    (passed, failed, work recomputed here and by audit chunks, when a worker was last caught), audit
    chunks waiting for an auditor, and the tokens reversed from workers caught cheating."""
    with client.pipeline(transaction=False) as pipe:
        intake_raw, results_raw, spot_raw, waiting, (reversed_, reversals) = (
            pipe.hgetall(keys.INTAKE_DROPPED).hgetall(keys.RESULTS_DROPPED).hgetall(keys.SPOT_CHECKS)
            .zcard(keys.AUDITS).hmget(keys.LEDGER_STATS, "reversed", "reversals").execute())
    intake = {reason: int(n) for reason, n in sorted(intake_raw.items())}
    results = {reason: int(n) for reason, n in sorted(results_raw.items())}
    spot: dict[str, float] = {name: float(n) if name == "last_caught_at" else int(n)
                              for name, n in sorted(spot_raw.items())}
    return {"intake_dropped": intake, "intake_dropped_total": sum(intake.values()),
            "results_dropped": results, "results_dropped_total": sum(results.values()),
            "spot_checks": spot, "audits_waiting": int(waiting),
            "reversed_micro": int(reversed_ or 0), "reversals": int(reversals or 0)}
