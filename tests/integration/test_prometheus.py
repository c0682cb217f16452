"""Issue 13, item 2: ``GET /metrics`` serves Prometheus's text format, read from Redis at each scrape.
The test drives a real job life on a real Redis (dispatch, collect, a caught cheater, an intake drop),
scrapes the endpoint and parses it with prometheus_client's own parser."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hydra_tasks import keys
from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.jobs import collect, store
from hydra_tasks.models import payload_digest
from hydra_tasks.trust import results as signed_results
from hydra_tasks.worker.compute import run_chunk
from support import dispatch_in_process, keyed_worker, submit_planned

pytestmark = pytest.mark.integration


@pytest.fixture
def app(redis_only: HydraCelery) -> HydraCelery:
    redis_only.redis.flushdb()
    return create_app(redis_only.settings.with_(adaptive=False, pi_chunk_samples=1_000))


def families(app: HydraCelery) -> list[Any]:
    from webapp import create_app as create_web

    response = create_web(app.settings.with_(api_token="t")).test_client().get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return list(text_string_to_metric_families(response.get_data(as_text=True)))


def scrape(app: HydraCelery) -> dict[str, Any]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families(app) for s in family.samples}


def value(samples: dict[str, Any], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_scrape_reports_jobs_chunks_workers_queues_tokens_and_drops(app: HydraCelery) -> None:
    honest = keyed_worker(app, "honest@test", region="eu-west")
    cheat = keyed_worker(app, "cheat@test", region="us-east")
    done_job = submit_planned(app, {"kind": "pi", "params": {"samples": 3_000, "seed": 1}})
    queued_job = submit_planned(app, {"kind": "pi", "params": {"samples": 3_000, "seed": 2}})
    merged = rejected = 0
    for _ in range(20):
        if store.get_job(app.redis, done_job).is_final:
            break
        for chunk, attempt, worker in dispatch_in_process(app):
            if chunk["job_id"] != done_job:
                continue
            key = honest if worker == "honest@test" else cheat
            result = run_chunk(chunk, attempt=attempt, worker_id=worker, region="r", key=key)
            if worker == "cheat@test":  # blocks that do not add up: caught
                payload = {**result["payload"], "hits": result["payload"]["hits"] + 1}
                result = signed_results.sign({**result, "payload": payload, "digest": payload_digest(
                    result["job_id"], result["chunk_id"], payload)}, key)
            outcome = collect.collect(app.redis, app.settings, result)
            merged += outcome == "merged"
            rejected += outcome == "rejected"
    app.redis.hincrby(keys.INTAKE_DROPPED, "bad signature", 2)  # as the intake counts them
    job = store.get_job(app.redis, done_job)
    assert job.state.value == "done" and rejected == 1

    samples = scrape(app)
    assert value(samples, "hydra_jobs", state="done") == 1
    assert value(samples, "hydra_jobs", state="running") + value(samples, "hydra_jobs", state="queued") == 1
    assert store.get_job(app.redis, queued_job).state.value in ("queued", "running")
    totals = [store.get_job(app.redis, j) for j in (done_job, queued_job)]
    assert value(samples, "hydra_chunks_merged_total") == sum(j.chunks_done for j in totals) == merged
    assert value(samples, "hydra_chunks_rejected_total") == 1
    assert value(samples, "hydra_chunks_dispatched_total") == sum(j.dispatched for j in totals)
    assert value(samples, "hydra_spot_checks_total", outcome="failed") == 1
    assert value(samples, "hydra_workers", state="quarantined", region="us-east") == 1
    assert value(samples, "hydra_workers", state="online", region="eu-west") == 1
    assert value(samples, "hydra_worker_speed", worker="honest@test", region="eu-west", kind="pi") > 0
    minted = int(app.redis.hget(keys.LEDGER_STATS, "minted") or 0)
    assert minted > 0 and value(samples, "hydra_tokens_minted_micro_total") == minted
    assert value(samples, "hydra_tokens_supply_micro") == minted
    assert value(samples, "hydra_intake_dropped_total", reason="bad signature") == 2
    assert value(samples, "hydra_carbon_grams_total") == pytest.approx(
        float(app.redis.hget(keys.SUSTAINABILITY, "carbon_g") or 0))
    assert value(samples, "hydra_carbon_counterfactual_grams_total") >= 0
    for queue in ("hydra.control", "hydra.intake", "hydra.region.eu-west", "hydra.region.us-east"):
        assert value(samples, "hydra_queue_depth", queue=queue) == 0  # nothing was published to the broker
    assert value(samples, "hydra_leases") == app.redis.zcard(keys.LEASES)


def test_the_grafana_dashboard_queries_only_metrics_the_endpoint_serves(app: HydraCelery) -> None:
    import json
    import re
    from pathlib import Path

    keyed_worker(app, "w@test", region="eu-west")
    submit_planned(app, {"kind": "pi", "params": {"samples": 3_000, "seed": 1}})
    # Every family is declared even with no samples yet (a labelled counter nothing has counted).
    served = {f.name + ("_total" if f.type == "counter" else "") for f in families(app)}
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "webapp/monitoring/grafana/dashboards/hydra.json")
                           .read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bhydra_[a-z_]+", e)}
    assert len(dashboard["panels"]) >= 8 and used
    missing = {name for name in used if name not in served}
    assert not missing, f"the dashboard queries metrics /metrics does not serve: {sorted(missing)}"
