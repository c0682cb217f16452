"""Chunk lifecycle against a real Redis: leases, windows, exactly-once merge, expiry, cancel, failure.

The control-plane modules are driven directly (no Celery worker), with `publish` capturing what
would be sent. End-to-end runs with real worker processes are in test_end_to_end.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

import pytest
from nacl.signing import SigningKey

from hydra_tasks import compute, keys
from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.jobs import collect, store
from hydra_tasks.jobs.spec import parse_job_spec
from hydra_tasks.ledger import book
from hydra_tasks.models import JobState, WorkerState
from hydra_tasks.scheduling import planner
from hydra_tasks.scheduling.dispatcher import dispatch
from hydra_tasks.scheduling.router import CapacityRouter
from hydra_tasks.scheduling.sweeper import sweep
from hydra_tasks.trust import identity
from hydra_tasks.worker import registry
from hydra_tasks.worker.compute import run_chunk

pytestmark = pytest.mark.integration

Sent = list[tuple[dict[str, Any], int, str]]  # (chunk, attempt, worker id)


@pytest.fixture
def app(redis_only: HydraCelery) -> HydraCelery:
    """Static 1,000-sample π chunks, so that chunk counts are predictable."""
    redis_only.redis.flushdb()
    from hydra_tasks.celery_app import create_app

    return create_app(redis_only.settings.with_(adaptive=False, pi_chunk_samples=1_000))


def add_workers(app: HydraCelery, regions: dict[str, int], *, now: float | None = None) -> None:
    now = time.time() if now is None else now
    for region, count in regions.items():
        for i in range(count):
            registry.register(app.redis, registry.WorkerInfo(
                worker_id=f"{region}-{i}@test", region=region, host="test", pid=1, cores=1, concurrency=1,
                pi_samples_per_s=1e8, mandelbrot_iters_per_s=1e8, state=WorkerState.ONLINE,
                started_at=now, last_seen=now))


def new_job(app: HydraCelery, raw: dict[str, Any]) -> str:
    spec = parse_job_spec(raw)
    job_id = store.new_job_id()
    store.create_job(app.redis, spec, planner.plan(job_id, spec, app.settings), job_id=job_id)
    return job_id


def pi_job(app: HydraCelery, *, samples: int = 10_000, seed: int = 7) -> str:
    return new_job(app, {"kind": "pi", "params": {"samples": samples, "seed": seed}})


def run_dispatch(app: HydraCelery, now: float | None = None) -> Sent:
    sent: Sent = []
    dispatch(app.redis, app.settings, CapacityRouter(), lambda c, a, w, r: sent.append((c, a, w)), now=now)
    return sent


def compute_and_collect(app: HydraCelery, sent: Sent) -> list[str]:
    return [collect.collect(app.redis, app.settings, run_chunk(c, attempt=a, worker_id=w, region="r"))
            for c, a, w in sent]


def test_dispatch_keeps_each_worker_within_its_window(app: HydraCelery) -> None:
    add_workers(app, {"eu-west": 1, "us-east": 2})
    job_id = pi_job(app)
    sent = run_dispatch(app)
    workers = [w for _, _, w in sent]
    per_slot = app.settings.inflight_per_slot
    assert {w: workers.count(w) for w in set(workers)} == {
        "eu-west-0@test": per_slot, "us-east-0@test": per_slot, "us-east-1@test": per_slot}
    assert run_dispatch(app) == []  # windows are full: nothing more goes out
    assert app.redis.zcard(keys.LEASES) == 3 * per_slot
    assert store.get_job(app.redis, job_id).state == "running"


def test_nothing_is_dispatched_while_no_worker_is_live(app: HydraCelery) -> None:
    add_workers(app, {"eu-west": 1}, now=time.time() - 3600)  # a worker that went silent long ago
    job_id = pi_job(app)
    assert run_dispatch(app) == []
    assert store.get_job(app.redis, job_id).state == "queued"


def test_a_job_completes_with_exactly_the_hits_of_one_kernel_call(app: HydraCelery) -> None:
    add_workers(app, {"eu-west": 1, "us-east": 1})
    job_id = pi_job(app, samples=25_500, seed=99)
    while (sent := run_dispatch(app)):
        compute_and_collect(app, sent)
    job = store.get_job(app.redis, job_id)
    assert job.state == "done"
    assert job.result["hits"] == compute.pi_hits(99, 0, 25_500)
    assert job.chunks_done == job.chunks_total == 26
    assert app.redis.zcard(keys.LEASES) == 0
    assert all(app.redis.scard(keys.worker_inflight(w)) == 0
               for w in ("eu-west-0@test", "us-east-0@test"))


def test_a_result_delivered_twice_is_merged_once(app: HydraCelery) -> None:
    add_workers(app, {"eu-west": 1})
    job_id = pi_job(app)
    chunk, attempt, holder = run_dispatch(app)[0]
    result = run_chunk(chunk, attempt=attempt, worker_id=holder, region="eu-west")
    assert collect.collect(app.redis, app.settings, result) == "merged"
    assert collect.collect(app.redis, app.settings, result) == "duplicate"
    job = store.get_job(app.redis, job_id)
    assert job.chunks_done == 1 and job.duplicates == 1
    assert job.hits == result["payload"]["hits"]
    assert job.units_done == 1_000


def test_expired_leases_are_taken_back_and_sent_again(app: HydraCelery) -> None:
    add_workers(app, {"eu-west": 1})
    job_id = pi_job(app)
    first = run_dispatch(app)
    later = time.time() + app.settings.lease_s + 1
    registry.heartbeat(app.redis, "eu-west-0@test", now=later)
    sent: Sent = []
    report = sweep(app.redis, app.settings, CapacityRouter(), lambda c, a, w, r: sent.append((c, a, w)), now=later)
    assert len(report.requeued) == len(first)
    assert sorted(c["chunk_id"] for c, _, _ in sent) == sorted(c["chunk_id"] for c, _, _ in first)
    assert all(attempt == 2 for _, attempt, _ in sent)
    assert store.get_job(app.redis, job_id).redispatched == len(first)


def test_a_late_result_for_a_requeued_chunk_counts_once_and_leaves_the_queue(app: HydraCelery) -> None:
    add_workers(app, {"eu-west": 1})
    job_id = pi_job(app)
    chunk, attempt, holder = run_dispatch(app)[0]
    later = time.time() + app.settings.lease_s + 1
    sweep(app.redis, app.settings, CapacityRouter(), lambda c, a, w, r: None, now=later)
    # The worker everyone thought dead reports after all.
    result = run_chunk(chunk, attempt=attempt, worker_id=holder, region="eu-west")
    assert collect.collect(app.redis, app.settings, result) == "merged"
    assert chunk["chunk_id"].encode() not in [c.encode() for c in app.redis.lrange(keys.job_todo(job_id), 0, -1)]
    assert collect.collect(app.redis, app.settings, result) == "duplicate"


def test_silent_workers_are_marked_offline_by_the_sweep(app: HydraCelery) -> None:
    add_workers(app, {"eu-west": 2})
    registry.heartbeat(app.redis, "eu-west-0@test", now=time.time() + 100)
    # Chunk messages waiting in both workers' queues (kombu's list and a priority sub-queue of it).
    for worker in ("eu-west-0@test", "eu-west-1@test"):
        queue = keys.priority_queues(keys.direct_queue(worker))
        app.redis.lpush(queue[0], "chunk-a")
        app.redis.lpush(queue[-1], "chunk-b")
    report = sweep(app.redis, app.settings, CapacityRouter(), lambda c, a, w, r: None, now=time.time() + 50)
    assert report.offline_workers == ["eu-west-1@test"]
    states = {w.worker_id: w.state for w in registry.list_workers(app.redis)}
    assert states == {"eu-west-0@test": WorkerState.ONLINE, "eu-west-1@test": WorkerState.OFFLINE}
    # The silent worker will not find stale chunks when it comes back (their leases expire as before);
    # the live one keeps its queue.
    assert not any(app.redis.exists(q) for q in keys.priority_queues(keys.direct_queue("eu-west-1@test")))
    live = keys.priority_queues(keys.direct_queue("eu-west-0@test"))
    assert app.redis.lrange(live[0], 0, -1) == ["chunk-a"] and app.redis.lrange(live[-1], 0, -1) == ["chunk-b"]
    app.redis.delete(*live)


def test_cancelling_drops_queued_chunks_and_releases_every_lease(app: HydraCelery) -> None:
    add_workers(app, {"eu-west": 1})
    job_id = pi_job(app)
    sent = run_dispatch(app)
    store.cancel_job(app.redis, job_id)
    assert store.job_state(app.redis, job_id) is JobState.CANCELLED
    assert app.redis.zcard(keys.LEASES) == 0 and app.redis.llen(keys.job_todo(job_id)) == 0
    assert app.redis.scard(keys.worker_inflight("eu-west-0@test")) == 0
    assert compute_and_collect(app, sent) == ["ignored"] * len(sent)  # results after cancel change nothing
    assert store.get_job(app.redis, job_id).chunks_done == 0
    assert run_dispatch(app) == []


def test_a_chunk_that_keeps_failing_fails_the_job_with_its_error(app: HydraCelery) -> None:
    add_workers(app, {"eu-west": 1})
    job_id = pi_job(app)
    sent = run_dispatch(app)
    chunk, attempt, holder = sent[0]
    outcomes = []
    for _ in range(app.settings.max_chunk_failures):
        bad = run_chunk(chunk, attempt=attempt, worker_id=holder, region="eu-west")
        outcomes.append(collect.collect(app.redis, app.settings, {**bad, "error": "KernelError: simulated",
                                                                    "payload": {}}))
        again = [s for s in run_dispatch(app) if s[0]["chunk_id"] == chunk["chunk_id"]]
        if again:  # the failed chunk goes out again first, with the next attempt number
            chunk, attempt, holder = again[0]
    assert outcomes[:-1] == ["rejected"] * (len(outcomes) - 1) and outcomes[-1] == "failed"
    job = store.get_job(app.redis, job_id)
    assert job.state == "failed" and "simulated" in job.error
    assert app.redis.zcard(keys.LEASES) == 0


def test_a_tampered_result_is_rejected_and_its_chunk_queued_again(app: HydraCelery) -> None:
    add_workers(app, {"eu-west": 1})
    job_id = pi_job(app)
    chunk, attempt, holder = run_dispatch(app)[0]
    result = run_chunk(chunk, attempt=attempt, worker_id=holder, region="eu-west")
    forged = {**result, "payload": {**result["payload"], "hits": result["payload"]["hits"] + 1}}
    assert collect.collect(app.redis, app.settings, forged) == "rejected"
    job = store.get_job(app.redis, job_id)
    assert job.chunks_done == 0 and job.rejections == 1
    assert app.redis.lindex(keys.job_todo(job_id), 0) == chunk["chunk_id"]


def test_a_mandelbrot_job_assembles_tiles_into_the_whole_image(app: HydraCelery) -> None:
    add_workers(app, {"eu-west": 2})
    params = {"width": 70, "height": 45, "max_iter": 60, "xmin": -2.0, "xmax": 0.6, "ymin": -1.1, "ymax": 1.1}
    app_small_tiles = app.settings.with_(tile_px=16)
    spec = parse_job_spec({"kind": "mandelbrot", "params": params})
    job_id = store.new_job_id()
    store.create_job(app.redis, spec, planner.plan(job_id, spec, app_small_tiles), job_id=job_id)
    while (sent := run_dispatch(app)):
        compute_and_collect(app, sent)
    job = store.get_job(app.redis, job_id)
    assert job.state == "done"
    from hydra_tasks.jobs.mandelbrot import decode_counts

    counts = decode_counts(app.redis.get(keys.job_counts(job_id)), 45, 70)
    p = spec.params
    whole = compute.mandelbrot_counts(xmin=p["xmin"], ymax=p["ymax"], dx=p["dx"], dy=p["dy"], col0=0, row0=0,
                                      width=70, height=45, max_iter=60)
    assert (counts == whole).all()
    assert job.result["iterations"] == int(whole.sum())


def _mandelbrot_job(app: HydraCelery, colouring: str) -> str:
    params = {"width": 96, "height": 64, "max_iter": 120, "center_x": -0.75, "center_y": 0.0, "span": 3.0,
              "colouring": colouring}
    spec = parse_job_spec({"kind": "mandelbrot", "params": params})
    job_id = store.new_job_id()
    store.create_job(app.redis, spec, planner.plan(job_id, spec, app.settings.with_(tile_px=32)), job_id=job_id)
    return job_id


def test_smooth_colouring_gives_a_continuous_image_and_bands_do_not(app: HydraCelery) -> None:
    import base64
    import io

    import numpy as np
    from PIL import Image

    add_workers(app, {"eu-west": 2})
    jobs = {c: _mandelbrot_job(app, c) for c in ("smooth", "bands")}
    while (sent := run_dispatch(app)):
        compute_and_collect(app, sent)
    colours = {}
    for colouring, job_id in jobs.items():
        assert store.get_job(app.redis, job_id).state == "done"
        png = base64.b64decode(app.redis.get(keys.job_image(job_id)))
        pixels = np.asarray(Image.open(io.BytesIO(png))).reshape(-1, 3)
        colours[colouring] = len(np.unique(pixels, axis=0))
    assert colours["smooth"] > 2 * colours["bands"]


def test_smooth_values_that_do_not_match_the_counts_are_rejected(app: HydraCelery) -> None:
    from hydra_tasks.jobs.mandelbrot import decode_array, encode_array

    add_workers(app, {"eu-west": 1})
    job_id = _mandelbrot_job(app, "smooth")
    chunk, attempt, holder = run_dispatch(app)[0]
    result = run_chunk(chunk, attempt=attempt, worker_id=holder, region="eu-west")
    p = chunk["params"]
    smooth = decode_array(result["payload"]["smooth"], p["height"], p["width"], "<f4").copy()
    smooth[smooth == smooth] += 50.0  # shift every escaped pixel's value far from its count
    forged_payload = {**result["payload"], "smooth": encode_array(smooth, "<f4")}
    from hydra_tasks.models import payload_digest

    forged = {**result, "payload": forged_payload,
              "digest": payload_digest(result["job_id"], result["chunk_id"], forged_payload)}
    assert collect.collect(app.redis, app.settings, forged) == "rejected"
    # No honest kernel gives such values: the worker is caught, and what it sends next counts for nothing.
    caught = registry.get_worker(app.redis, holder)
    assert caught is not None and "smooth values do not match" in caught.quarantined
    assert collect.collect(app.redis, app.settings, result) == "ignored"
    job = store.get_job(app.redis, job_id)
    assert job.rejections == 1 and job.chunks_done == 0


def test_a_paused_worker_gets_no_work_and_chunks_it_hands_back_are_not_failures(app: HydraCelery) -> None:
    from hydra_tasks.worker.compute import decline

    add_workers(app, {"eu-west": 2})
    job_id = pi_job(app)
    registry.heartbeat(app.redis, "eu-west-1@test", state=WorkerState.PAUSED, pause_reason="on battery")
    sent = run_dispatch(app)
    assert {w for _, _, w in sent} == {"eu-west-0@test"}
    paused = {w.worker_id: w for w in registry.list_workers(app.redis)}["eu-west-1@test"]
    assert paused.state is WorkerState.PAUSED and paused.pause_reason == "on battery"
    chunk, attempt, _ = sent[0]
    handed_back = decline(chunk, attempt=attempt, worker_id="eu-west-0@test", region="eu-west", reason="on battery")
    assert collect.collect(app.redis, app.settings, handed_back) == "declined"
    job = store.get_job(app.redis, job_id)
    assert job.failures == 0 and job.state == "running"
    assert app.redis.lindex(keys.job_todo(job_id), 0) == chunk["chunk_id"]


def test_accepted_chunks_teach_the_worker_model_its_speed(app: HydraCelery) -> None:
    add_workers(app, {"eu-west": 1})
    pi_job(app, samples=8_000)
    while (sent := run_dispatch(app)):
        compute_and_collect(app, sent)
    worker = {w.worker_id: w for w in registry.list_workers(app.redis)}["eu-west-0@test"]
    assert worker.perf_pi.observations == 8 and worker.perf_pi.rate > 0
    assert worker.ok == 8 and worker.reliability == pytest.approx(9 / 10)


def _add_worker(app: HydraCelery, worker_id: str, rate: float, *, last_seen: float | None = None) -> None:
    now = time.time() if last_seen is None else last_seen
    registry.register(app.redis, registry.WorkerInfo(
        worker_id=worker_id, region="eu-west", host="test", pid=1, cores=1, concurrency=1, pi_samples_per_s=rate,
        mandelbrot_iters_per_s=rate, state=WorkerState.ONLINE, started_at=now, last_seen=now))


@pytest.fixture
def backup_app(app: HydraCelery) -> HydraCelery:
    """Adaptive (backups on), with chunks so long that a 1,000-sample job is one chunk."""
    from hydra_tasks.celery_app import create_app

    return create_app(app.settings.with_(adaptive=True, target_chunk_s=1e3, min_chunk_s=1e3))


def test_a_chunk_on_a_slow_worker_gets_a_backup_on_a_fast_one_and_counts_once(backup_app: HydraCelery) -> None:
    app = backup_app
    _add_worker(app, "slow@test", 1e2)  # 1,000 samples take it 10 s
    job_id = pi_job(app, samples=1_000)  # one chunk, which the slow worker gets while alone
    [(chunk, attempt, holder)] = run_dispatch(app)
    assert holder == "slow@test"
    _add_worker(app, "fast@test", 1e9)
    # A worker with a record: three accepted chunks confirmed its speed (a bare claim would be taken
    # at no more than the other workers' speed, see scheduling/cluster.confirmed_view).
    app.redis.hset(keys.worker("fast@test"), mapping={"rate:pi": "1e9", "n:pi": "3"})
    [(copy, _, helper)] = run_dispatch(app)  # nothing left to hand out: back up the straggler
    assert helper == "fast@test" and copy == chunk
    assert run_dispatch(app) == []  # one backup per chunk
    assert compute_and_collect(app, [(copy, attempt, helper)]) == ["merged"]
    assert compute_and_collect(app, [(chunk, attempt, holder)]) == ["ignored"]  # job done: the late copy changes nothing
    job = store.get_job(app.redis, job_id)
    assert job.state == "done" and job.backups == 1 and job.chunks_done == 1
    assert job.result["hits"] == compute.pi_hits(7, 0, 1_000)
    assert app.redis.scard(keys.worker_inflight("slow@test")) == app.redis.scard(keys.worker_inflight("fast@test")) == 0


def test_a_chunk_on_a_silent_worker_is_backed_up_before_its_lease_expires(backup_app: HydraCelery) -> None:
    app = backup_app
    _add_worker(app, "a@test", 1e9)
    pi_job(app, samples=1_000)
    [(chunk, _, holder)] = run_dispatch(app)
    _add_worker(app, "b@test", 1e9)
    registry.heartbeat(app.redis, holder, now=time.time() - 3600)  # the holder went silent
    [(copy, _, helper)] = run_dispatch(app)
    assert (copy, helper) == (chunk, "b@test")


def test_no_backup_when_the_holder_is_as_fast_as_the_idle_worker(backup_app: HydraCelery) -> None:
    app = backup_app
    _add_worker(app, "a@test", 1e9)
    pi_job(app, samples=1_000)
    assert len(run_dispatch(app)) == 1
    _add_worker(app, "b@test", 1e9)
    assert run_dispatch(app) == []


def test_an_adaptive_mandelbrot_job_previews_first_then_balances_tiles_by_cost(redis_only: HydraCelery) -> None:
    from hydra_tasks.celery_app import create_app
    from hydra_tasks.jobs.mandelbrot import decode_counts

    redis_only.redis.flushdb()
    app = create_app(redis_only.settings.with_(adaptive=True, target_chunk_s=0.01, min_chunk_s=0.01))
    _add_worker(app, "fast@test", 4e9)
    _add_worker(app, "slow@test", 1e9)
    params = {"width": 240, "height": 180, "max_iter": 400, "center_x": -0.75, "center_y": 0.1, "span": 2.6,
              "colouring": "bands"}
    job_id = new_job(app, {"kind": "mandelbrot", "params": params})
    [(preview, attempt, worker)] = run_dispatch(app)  # only the preview exists at first
    assert preview["chunk_id"] == "preview" and preview["params"]["preview"]
    assert compute_and_collect(app, [(preview, attempt, worker)]) == ["merged"]
    assert app.redis.get(keys.job_image(job_id))  # the preview image is there before any tile
    tiles = {cid: json.loads(spec) for cid, spec in app.redis.hgetall(keys.job_chunks(job_id)).items()
             if cid != "preview"}
    assert len(tiles) >= 12
    costs = [t["params"]["est_cost"] for t in tiles.values()]
    areas = [t["units"] for t in tiles.values()]
    assert max(areas) / min(areas) > 2 * max(costs) / min(costs) or max(areas) > 2 * min(areas)  # not uniform
    first = run_dispatch(app)
    by_worker = {w: c["params"]["est_cost"] for c, _, w in first}
    assert by_worker["fast@test"] >= by_worker["slow@test"]  # heaviest tiles go to the fastest worker
    compute_and_collect(app, first)
    while (sent := run_dispatch(app)):
        compute_and_collect(app, sent)
    job = store.get_job(app.redis, job_id)
    assert job.state == "done" and job.units_done == 240 * 180
    p = job.params
    whole = compute.mandelbrot_counts(xmin=p["xmin"], ymax=p["ymax"], dx=p["dx"], dy=p["dy"], col0=0, row0=0,
                                      width=240, height=180, max_iter=400)
    assert (decode_counts(app.redis.get(keys.job_counts(job_id)), 180, 240) == whole).all()
    log = [json.loads(e) for e in app.redis.lrange(keys.job_log(job_id), 0, -1)]
    errors = [abs(e["est_cost"] - e["work"]) / max(e["work"], 1) for e in log if "est_cost" in e]
    assert len(errors) == len(tiles) and float(np.median(errors)) < 0.5


def test_static_mode_sends_no_backups(app: HydraCelery) -> None:
    _add_worker(app, "slow@test", 1e2)
    pi_job(app, samples=1_000)
    assert len(run_dispatch(app)) == 1
    _add_worker(app, "fast@test", 1e9)
    assert run_dispatch(app) == []


def test_a_failure_reported_by_a_worker_that_does_not_hold_the_chunk_changes_nothing(app: HydraCelery) -> None:
    add_workers(app, {"eu-west": 1})
    job_id = pi_job(app)
    chunk, attempt, holder = run_dispatch(app)[0]
    forged = {**run_chunk(chunk, attempt=attempt, worker_id="intruder@test", region="eu-west"),
              "error": "KernelError: forged", "payload": {}}
    for _ in range(app.settings.max_chunk_failures + 1):
        assert collect.collect(app.redis, app.settings, forged) == "ignored"
    job = store.get_job(app.redis, job_id)
    assert job.state == "running" and job.failures == 0
    assert app.redis.sismember(keys.worker_inflight(holder), keys.lease_member(job_id, chunk["chunk_id"]))


def test_a_float_sample_count_is_rejected_before_anything_is_merged(app: HydraCelery) -> None:
    from hydra_tasks.models import payload_digest

    add_workers(app, {"eu-west": 1})
    job_id = pi_job(app)
    chunk, attempt, holder = run_dispatch(app)[0]
    result = run_chunk(chunk, attempt=attempt, worker_id=holder, region="eu-west")
    payload = {**result["payload"], "samples": float(result["payload"]["samples"])}
    bad = {**result, "payload": payload, "digest": payload_digest(job_id, chunk["chunk_id"], payload)}
    assert collect.collect(app.redis, app.settings, bad) == "rejected"
    assert store.get_job(app.redis, job_id).chunks_done == 0
    assert not app.redis.sismember(keys.job_done(job_id), chunk["chunk_id"])


def test_a_worker_record_with_impossible_values_is_ignored_by_scheduling(app: HydraCelery) -> None:
    add_workers(app, {"eu-west": 1})
    _add_worker(app, "liar@test", 1e9)
    app.redis.hset(keys.worker("liar@test"), mapping={"pi_samples_per_s": "nan", "concurrency": "1000000"})
    _add_worker(app, "greedy@test", 1e9)
    app.redis.hset(keys.worker("greedy@test"), mapping={"concurrency": "1000000", "cores": "2",
                                                        "rate:pi": "1e9", "n:pi": "5"})  # confirmed speed
    workers = {w.worker_id: w for w in registry.list_workers(app.redis)}
    assert "liar@test" not in workers and workers["greedy@test"].concurrency == 2
    pi_job(app, samples=100_000)
    sent = run_dispatch(app)
    assert {w for _, _, w in sent} == {"eu-west-0@test", "greedy@test"}
    assert sum(w == "greedy@test" for _, _, w in sent) == 2 * app.settings.inflight_per_slot


def test_every_accepted_chunk_is_accounted_and_a_clean_region_saves_carbon(app: HydraCelery) -> None:
    from hydra_tasks.metrics import sustainability_metrics

    now = time.time()
    for wid, region in (("clean@test", "eu-north"), ("dirty@test", "ap-south")):
        registry.register(app.redis, registry.WorkerInfo(
            worker_id=wid, region=region, host="h", pid=1, cores=1, concurrency=1, pi_samples_per_s=1e8,
            mandelbrot_iters_per_s=1e8, state=WorkerState.ONLINE, started_at=now, last_seen=now))
    job_id = pi_job(app, samples=2_000)
    sent = [s for s in run_dispatch(app) if s[2] == "clean@test"]
    results = [run_chunk(c, attempt=a, worker_id=w, region="eu-north") for c, a, w in sent]
    for r in results:
        r["cpu_s"] = r["elapsed_s"] = 1.0  # make the energy visible: 1 s at the default 15 W per core
        assert collect.collect(app.redis, app.settings, r) == "merged"
    job = sustainability_metrics(app.redis, job_id=job_id)["jobs"][0]
    assert job["energy_kwh"] == pytest.approx(len(results) * 15 / 3.6e6)
    assert 0 < job["carbon_g"] < job["counterfactual_g"]  # Sweden's grid against the IN/SE capacity mix
    assert sustainability_metrics(app.redis)["overall"]["carbon_g"] == pytest.approx(job["carbon_g"])


SIGNING_KEYS: dict[str, SigningKey] = {}  # worker id -> its key, for add_keyed_workers' workers


def signed_run(chunk: dict[str, Any], attempt: int, worker_id: str) -> dict[str, Any]:
    """The worker computes the chunk and signs its result, as every keyed volunteer does."""
    return run_chunk(chunk, attempt=attempt, worker_id=worker_id, region="eu-west", key=SIGNING_KEYS[worker_id])


def add_keyed_workers(app: HydraCelery, *names: str, now: float | None = None) -> dict[str, str]:
    """Workers in eu-west with their own key and token account (as a worker's start makes them)."""
    now = time.time() if now is None else now
    accounts = {}
    for name in names:
        SIGNING_KEYS[name] = SigningKey.generate()
        accounts[name] = identity.public_hex(SIGNING_KEYS[name])
        registry.register(app.redis, registry.WorkerInfo(
            worker_id=name, region="eu-west", host="test", pid=1, cores=1, concurrency=1, pi_samples_per_s=1e8,
            mandelbrot_iters_per_s=1e8, state=WorkerState.ONLINE, started_at=now, last_seen=now,
            public_key=accounts[name]))
        book.open_account(app.redis, accounts[name])
    return accounts


def test_tokens_are_minted_once_for_an_accepted_chunk_and_never_for_a_rejected_or_stolen_one(
        app: HydraCelery) -> None:
    accounts = add_keyed_workers(app, "honest@test", "thief@test")
    pi_job(app)
    sent = run_dispatch(app)
    mine = [(c, a, w) for c, a, w in sent if w == "honest@test"]
    chunk, attempt, _ = mine[0]
    good = signed_run(chunk, attempt, "honest@test")
    forged = {**good, "payload": {**good["payload"], "hits": good["payload"]["hits"] + 1}}
    assert collect.collect(app.redis, app.settings, forged) == "rejected"
    assert book.balance(app.redis, accounts["honest@test"])["balance_micro"] == 0  # nothing for bad work
    assert collect.collect(app.redis, app.settings, good) == "merged"
    paid = book.balance(app.redis, accounts["honest@test"])["balance_micro"]
    assert paid > 0
    assert collect.collect(app.redis, app.settings, good) == "duplicate"
    assert book.balance(app.redis, accounts["honest@test"])["balance_micro"] == paid  # counted once
    # Another worker returns (correct) work for a chunk it was never sent: ignored, and the honest
    # worker's result for it is still merged and paid.
    chunk2, attempt2, _ = mine[1]
    stolen = signed_run(chunk2, attempt2, "thief@test")
    assert collect.collect(app.redis, app.settings, stolen) == "ignored"
    assert book.balance(app.redis, accounts["thief@test"])["balance_micro"] == 0
    honest = signed_run(chunk2, attempt2, "honest@test")
    assert collect.collect(app.redis, app.settings, honest) == "merged"
    assert book.balance(app.redis, accounts["honest@test"])["balance_micro"] > paid


def test_a_late_result_after_the_chunk_was_sent_elsewhere_is_merged_and_paid_once(app: HydraCelery) -> None:
    now = time.time()
    accounts = add_keyed_workers(app, "slow@test", "fast@test", now=now)
    new_job(app, {"kind": "pi", "params": {"samples": 1_000, "seed": 3}})  # one chunk
    [(chunk, attempt, first)] = run_dispatch(app, now=now)
    other = "fast@test" if first == "slow@test" else "slow@test"
    later = now + app.settings.lease_s + 1
    for name in accounts:
        registry.heartbeat(app.redis, name, now=later)
    app.redis.sadd(keys.worker_inflight(first), "busy:1", "busy:2")  # the first worker's window is full now
    resent: Sent = []
    sweep(app.redis, app.settings, CapacityRouter(), lambda c, a, w, r: resent.append((c, a, w)), now=later)
    [(again, attempt2, second)] = resent  # the expired lease is taken back and the chunk sent elsewhere
    assert second == other and again["chunk_id"] == chunk["chunk_id"]
    late = signed_run(chunk, attempt, first)
    assert collect.collect(app.redis, app.settings, late) == "merged"  # it was sent to this worker
    on_time = signed_run(again, attempt2, second)
    assert collect.collect(app.redis, app.settings, on_time) == "ignored"  # the job is already done
    paid = {name: book.balance(app.redis, a)["balance_micro"] for name, a in accounts.items()}
    assert paid[first] > 0 and paid[second] == 0  # the chunk is paid exactly once, to who did it first
