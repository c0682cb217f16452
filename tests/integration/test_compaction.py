"""Issue 15, item 3: bounded memory. A finished job keeps its result and summary; FINISH compacts its
working state (chunk specs, parts, done set, audits, queues, leases; the chunk log expires later) and
its mint idempotency keys, without weakening exactly-once: a late result is refused by the job's final
state, a worker caught cheating later still loses what it earned, and a re-opened job still gives the
exact result. Finished jobs are removed after the retention period (the sweep, ``hydra jobs prune``).

Real Redis, the real collect path and Lua scripts; the test plays the workers with the real kernels."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from click.testing import CliRunner
from nacl.signing import SigningKey

from hydra_tasks import compute, keys
from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.jobs import collect, retention, store
from hydra_tasks.ledger import audit
from hydra_tasks.trust import consequences, identity
from hydra_tasks.worker.compute import run_chunk
from support import dispatch_in_process, keyed_worker, submit_planned

pytestmark = pytest.mark.integration

DETAIL_S = 120.0


@pytest.fixture
def app(redis_only: HydraCelery) -> HydraCelery:
    redis_only.redis.flushdb()
    return create_app(redis_only.settings.with_(adaptive=False, pi_chunk_samples=1_000, tile_px=16,
                                                job_detail_s=DETAIL_S))


def job_keys_left(app: HydraCelery, job_id: str) -> set[str]:
    return {k for k in app.redis.scan_iter(match=f"{keys.job(job_id)}*", count=1000)}


def run_all(app: HydraCelery, workers: dict[str, SigningKey], job_ids: list[str]) -> list[dict[str, Any]]:
    """Compute whatever is sent until the jobs end; returns every result collected."""
    results = []
    for _ in range(100):
        if all(store.get_job(app.redis, j).is_final for j in job_ids):
            return results
        for chunk, attempt, worker in dispatch_in_process(app):
            result = run_chunk(chunk, attempt=attempt, worker_id=worker, region="r", key=workers[worker])
            assert collect.collect(app.redis, app.settings, result) in ("merged", "duplicate")
            results.append(result)
    raise AssertionError("the jobs did not finish")


def test_a_finished_job_keeps_its_result_and_summary_and_nothing_per_chunk(app: HydraCelery) -> None:
    workers = {name: keyed_worker(app, name) for name in ("a@test", "b@test")}
    samples, seed = 12_000, 5
    pi_job = submit_planned(app, {"kind": "pi", "params": {"samples": samples, "seed": seed}})
    image_job = submit_planned(app, {"kind": "mandelbrot", "params": {"width": 48, "height": 32, "max_iter": 100}})
    results = run_all(app, workers, [pi_job, image_job])

    job = store.get_job(app.redis, pi_job)
    assert job.state.value == "done" and job.result["hits"] == compute.pi_hits(seed, 0, samples)
    assert job.chunks_done == 12 and set(job.workers) == set(workers)  # the per-worker summary stays
    assert job_keys_left(app, pi_job) == {keys.job(pi_job), keys.job_workers(pi_job), keys.job_log(pi_job)}
    assert job_keys_left(app, image_job) == {keys.job(image_job), keys.job_workers(image_job), keys.job_log(image_job),
                                             keys.job_image(image_job), keys.job_counts(image_job)}
    for job_id in (pi_job, image_job):
        assert 0 < app.redis.ttl(keys.job_log(job_id)) <= DETAIL_S  # the charts' detail expires; nothing else does
        assert app.redis.hget(keys.job(job_id), "compacted") == "1"
        assert app.redis.zscore(keys.JOBS_FINISHED, job_id) is not None
        assert not [k for k in app.redis.smembers(keys.LEDGER_MINTED) if k.startswith(job_id)]
    # 12 π chunks and 6 tiles were paid once each; their 18 mint keys left the minted set, counted.
    mints = [f for _, f in audit.journal(app.redis) if f["type"] == "mint"]
    assert len(mints) == 18 and app.redis.hget(keys.LEDGER_STATS, "keys_compacted") == "18"
    report = audit.verify(app.redis)
    assert report.ok, report.problems

    # A late copy of any result is refused by the job's final state: nothing counted, nothing paid.
    before = {j: store.get_job(app.redis, j).to_json() for j in (pi_job, image_job)}
    supply = app.redis.hget(keys.LEDGER_STATS, "supply")
    for result in results[:3] + results[-3:]:
        assert collect.collect(app.redis, app.settings, result) == "ignored"
    assert {j: store.get_job(app.redis, j).to_json() for j in (pi_job, image_job)} == before
    assert app.redis.hget(keys.LEDGER_STATS, "supply") == supply
    assert job_keys_left(app, pi_job) == {keys.job(pi_job), keys.job_workers(pi_job), keys.job_log(pi_job)}


def test_a_worker_caught_after_its_jobs_were_compacted_loses_them_and_reopening_gives_the_exact_result(
        app: HydraCelery) -> None:
    honest_key = keyed_worker(app, "honest@test")
    cheat_key = keyed_worker(app, "cheater@test")
    workers = {"honest@test": honest_key, "cheater@test": cheat_key}
    samples, seed = 10_000, 9
    pi_job = submit_planned(app, {"kind": "pi", "params": {"samples": samples, "seed": seed}})
    image_job = submit_planned(app, {"kind": "mandelbrot", "params": {"width": 48, "height": 32, "max_iter": 100}})
    run_all(app, workers, [pi_job, image_job])
    reference_counts = app.redis.get(keys.job_counts(image_job))
    truth = compute.pi_hits(seed, 0, samples)
    assert store.get_job(app.redis, pi_job).result["hits"] == truth
    by_cheater = {j: int(store.get_job(app.redis, j).workers["cheater@test"].chunks) for j in (pi_job, image_job)}
    assert all(0 < n < 10 for n in by_cheater.values()), by_cheater  # both workers took part in both jobs
    paid = int(app.redis.hget(keys.LEDGER_EARNED, identity.public_hex(cheat_key)))

    # Caught later (a check elsewhere proved it wrong): its results in the compacted jobs are flagged
    # from its results log alone, and every token it earned is reversed.
    punished = consequences.catch(app.redis, app.settings, "cheater@test", "a spot check failed")
    assert punished.flagged == by_cheater and punished.reversed_micro == paid
    assert int(app.redis.hget(keys.LEDGER_EARNED, identity.public_hex(cheat_key))) == 0
    for job_id in (pi_job, image_job):
        assert store.get_job(app.redis, job_id).suspect == by_cheater[job_id]
    report = audit.verify(app.redis)
    assert report.ok and report.reversals == sum(by_cheater.values()), report.problems

    # Re-opened, the compacted jobs recompute only the flagged chunks: exact π, the same image.
    for job_id in (pi_job, image_job):
        reopened = store.reopen_job(app.redis, job_id)
        assert reopened.state.value == "running" and app.redis.zscore(keys.JOBS_FINISHED, job_id) is None
    sent_again = []
    for _ in range(50):
        if all(store.get_job(app.redis, j).is_final for j in (pi_job, image_job)):
            break
        for chunk, attempt, worker in dispatch_in_process(app):
            assert worker == "honest@test"  # the cheater is quarantined
            sent_again.append(chunk["chunk_id"])
            result = run_chunk(chunk, attempt=attempt, worker_id=worker, region="r", key=honest_key)
            assert collect.collect(app.redis, app.settings, result) == "merged"
    assert len(sent_again) == sum(by_cheater.values())
    redone = store.get_job(app.redis, pi_job)
    assert redone.state.value == "done" and redone.result["hits"] == truth and redone.suspect == 0
    assert redone.result["samples"] == samples
    assert app.redis.get(keys.job_counts(image_job)) == reference_counts
    assert job_keys_left(app, pi_job) == {keys.job(pi_job), keys.job_workers(pi_job), keys.job_log(pi_job)}
    report = audit.verify(app.redis)
    assert report.ok, report.problems


def test_finished_jobs_are_pruned_after_the_retention_period(app: HydraCelery, redis_url: str) -> None:
    from hydra_tasks.scheduling.sweeper import sweep
    from hydra_tasks.scheduling.router import CapacityRouter

    now = time.time()
    ages = {"old": 3 * 86_400, "older": 9 * 86_400, "recent": 3_600}
    ids = {}
    for name, age in ages.items():
        job_id = submit_planned(app, {"kind": "pi", "params": {"samples": 2_000, "seed": 1}})
        store.cancel_job(app.redis, job_id, now=now - age)
        ids[name] = job_id
    live = submit_planned(app, {"kind": "pi", "params": {"samples": 2_000, "seed": 2}})

    assert retention.due(app.redis, 2 * 86_400, now=now) == [ids["older"], ids["old"]]  # oldest first
    assert retention.prune(app.redis, 8 * 86_400, now=now) == [ids["older"]]
    assert not job_keys_left(app, ids["older"]) and app.redis.zscore(keys.JOBS, ids["older"]) is None

    # The sweep prunes what HYDRA_JOB_RETENTION_S says is due; 0 keeps every job.
    settings = app.settings.with_(job_retention_s=2 * 86_400)
    assert sweep(app.redis, app.settings.with_(job_retention_s=0), CapacityRouter(), lambda *a: None,
                 now=now).pruned_jobs == []
    assert sweep(app.redis, settings, CapacityRouter(), lambda *a: None, now=now).pruned_jobs == [ids["old"]]
    assert store.get_job(app.redis, ids["recent"]).state.value == "cancelled"
    assert store.get_job(app.redis, live).state.value in ("queued", "running")
    metrics = app.redis.hgetall(keys.JOBS_TOTALS)
    assert metrics["cancelled"] == "1"  # the held finished jobs; the counter sums stay

    # `hydra jobs prune`: a dry run lists, a run removes; the recent job is older than 60 s.
    from hydra_tasks.cli import main

    env = {"HYDRA_REDIS_URL": app.conf.broker_url, "HYDRA_DATA_DIR": str(app.settings.data_dir)}
    out = CliRunner().invoke(main, ["jobs", "prune", "--older-than", "60", "--dry-run"], env=env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {"would_prune": [ids["recent"]], "older_than_s": 60.0}
    out = CliRunner().invoke(main, ["jobs", "prune", "--older-than", "60"], env=env)
    assert out.exit_code == 0 and json.loads(out.output)["pruned"] == [ids["recent"]], out.output
    assert app.redis.zcard(keys.JOBS_FINISHED) == 0
    assert [j.id for j in store.list_jobs(app.redis)] == [live]
