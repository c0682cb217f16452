"""The state layer under concurrency, on a real Redis: control processes that dispatch, merge and
finish at the same time never cut a range twice, never lose a chunk and never leak a worker's slot.

Scripts are given every key up front, so a caller reads what a key depends on (the next chunk, a
lease's holders) before calling; these tests make that read go stale on purpose.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import redis

from hydra_tasks import compute, keys
from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.jobs import collect, store
from hydra_tasks.jobs.spec import parse_job_spec
from hydra_tasks.lua import Grant, GrantCode, Holders, MergeCode, RequeueCode, Scripts
from hydra_tasks.models import WorkerState
from hydra_tasks.scheduling import planner
from hydra_tasks.scheduling.dispatcher import Prefetch, dispatch
from hydra_tasks.scheduling.router import CapacityRouter
from hydra_tasks.worker import registry
from hydra_tasks.worker.compute import run_chunk

pytestmark = pytest.mark.integration


@pytest.fixture
def app(redis_only: HydraCelery) -> HydraCelery:
    redis_only.redis.flushdb()
    return create_app(redis_only.settings.with_(adaptive=False, pi_chunk_samples=1_000, inflight_per_slot=2))


def add_workers(app: HydraCelery, count: int) -> list[str]:
    now = time.time()
    ids = [f"w{i}@test" for i in range(count)]
    for worker_id in ids:
        registry.register(app.redis, registry.WorkerInfo(
            worker_id=worker_id, region="r", host="test", pid=1, cores=1, concurrency=1, pi_samples_per_s=1e8,
            mandelbrot_iters_per_s=1e8, state=WorkerState.ONLINE, started_at=now, last_seen=now))
    return ids


def pi_job(app: HydraCelery, samples: int, seed: int = 11) -> str:
    spec = parse_job_spec({"kind": "pi", "params": {"samples": samples, "seed": seed}})
    job_id = store.new_job_id()
    store.create_job(app.redis, spec, planner.plan(job_id, spec, app.settings), job_id=job_id)
    return job_id


def test_two_control_processes_dispatching_at_once_cut_every_sample_exactly_once(app: HydraCelery) -> None:
    workers = add_workers(app, 6)
    samples = 150_000
    job_id = pi_job(app, samples)
    errors: list[BaseException] = []
    specs: dict[str, dict[str, Any]] = {}  # every chunk sent (the job's own specs are compacted when it ends)

    def control_process() -> None:  # its own connection, as a second control worker would have
        client = redis.Redis.from_url(app.conf.broker_url, decode_responses=True)
        try:
            for _ in range(2_000):
                sent: list[tuple[dict[str, Any], int, str]] = []
                dispatch(client, app.settings, CapacityRouter(), lambda c, a, w, r: sent.append((c, a, w)))
                for chunk, attempt, worker_id in sent:
                    specs[chunk["chunk_id"]] = chunk
                    collect.collect(client, app.settings, run_chunk(chunk, attempt=attempt, worker_id=worker_id,
                                                                    region="r"))
                if store.job_state(client, job_id).is_final:  # type: ignore[union-attr]
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=control_process) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    job = store.get_job(app.redis, job_id)
    assert job.state == "done"
    assert job.result["hits"] == compute.pi_hits(11, 0, samples)  # bit-identical to one kernel call
    ranges = sorted((c["params"]["start"], c["params"]["count"]) for c in specs.values())
    covered = 0
    for start, count in ranges:  # contiguous and disjoint: no sample cut twice, none skipped
        assert start == covered
        covered += count
    assert covered == samples and job.chunks_total == len(ranges) == job.chunks_done
    assert app.redis.zcard(keys.LEASES) == 0
    assert all(app.redis.scard(keys.worker_inflight(w)) == 0 for w in workers)


def lease_then_move(app: HydraCelery, job_id: str, first: str, second: str) -> Grant:
    """Lease the job's first chunk (a π range of up to 1,000 samples) to ``first``; let the lease
    expire; lease the chunk again to ``second``. Returns the first grant."""
    lua = Scripts(app.redis)

    def cut(chunk_id: str, start: int, count: int) -> str:
        return json.dumps({"job_id": job_id, "chunk_id": chunk_id, "kind": "pi",
                           "params": {"seed": 11, "start": start, "count": count}, "units": count})

    now = time.time()
    grant = lua.grant(job_id, first, "r", capacity=2, now=now, lease_s=1.0, rate=1e8, cut=cut, cut_units=1_000)
    assert grant.code is GrantCode.LEASED and grant.chunk_id
    taken = lua.requeue(job_id, grant.chunk_id, now=now + 60, counter="expiries", force=False)
    assert taken.code is RequeueCode.REQUEUED and taken.worker == first
    regrant = lua.grant(job_id, second, "r", capacity=2, now=now + 61, lease_s=1.0, rate=1e8, cut=cut, cut_units=1)
    assert regrant.chunk_id == grant.chunk_id and regrant.attempt == 2
    return grant


def test_a_merge_with_an_outdated_view_of_the_lease_frees_the_slot_of_its_new_holder(app: HydraCelery) -> None:
    first, second = add_workers(app, 2)
    job_id = pi_job(app, 1_000)
    lua = Scripts(app.redis)
    now = time.time()
    seen_by_collector = Holders(first)  # what a collector read before the lease moved on
    grant = lease_then_move(app, job_id, first, second)
    assert grant.chunk_id
    member = keys.lease_member(job_id, grant.chunk_id)
    assert app.redis.sismember(keys.worker_inflight(second), member)
    # The first holder's late result is still accepted (it was sent the chunk), with the stale view.
    code, done, total, _ = lua.merge(job_id, grant.chunk_id, first, "{}", now=now + 62, elapsed_ms=5, units=1_000,
                                     increments={"units_done": 1_000}, holders=seen_by_collector)
    assert code is MergeCode.MERGED and done == total == 1_000
    assert not app.redis.sismember(keys.worker_inflight(second), member)  # the new holder's slot is free again
    assert app.redis.zscore(keys.LEASES, member) is None and not app.redis.exists(keys.lease(job_id, grant.chunk_id))


def test_ending_a_job_releases_every_lease_backup_and_waiting_chunk(app: HydraCelery) -> None:
    workers = add_workers(app, 3)
    job_id = pi_job(app, 20_000)
    sent: list[tuple[dict[str, Any], int, str]] = []
    dispatch(app.redis, app.settings, CapacityRouter(), lambda c, a, w, r: sent.append((c, a, w)))
    assert len(sent) == 6
    lua = Scripts(app.redis)
    chunk = sent[0][0]["chunk_id"]
    helper = next(w for w in workers if w != sent[0][2])
    assert lua.backup(job_id, chunk, helper, capacity=3) is not None  # a straggler's second copy
    lua.requeue(job_id, sent[1][0]["chunk_id"], now=time.time(), counter="failures", force=True, reporter=sent[1][2])
    assert app.redis.llen(keys.job_todo(job_id)) == 1
    store.cancel_job(app.redis, job_id)
    assert app.redis.zcard(keys.LEASES) == 0
    assert all(app.redis.scard(keys.worker_inflight(w)) == 0 for w in workers)
    assert not app.redis.exists(keys.job_todo(job_id))
    assert not any(app.redis.exists(keys.lease(job_id, c["chunk_id"])) for c, _, _ in sent)
    assert store.get_job(app.redis, job_id).state == "cancelled"


def test_a_chunk_the_job_handed_out_meanwhile_is_not_granted_twice(app: HydraCelery) -> None:
    """GRANT leases exactly the chunk its caller peeked at; if another process took it, MOVED."""
    (worker,) = add_workers(app, 1)
    job_id = pi_job(app, 5_000)
    app.redis.rpush(keys.job_todo(job_id), "c-requeued")
    app.redis.hset(keys.job_chunks(job_id), "c-requeued", json.dumps(
        {"job_id": job_id, "chunk_id": "c-requeued", "kind": "pi", "params": {"seed": 1, "start": 0, "count": 10},
         "units": 10}))
    script = app.redis.register_script(__import__("hydra_tasks.lua", fromlist=["source"]).source("grant"))
    args = ["todo", "c-other", f"{job_id}:c-other", worker, "r", repr(time.time()), 2, "1.0", "1e8", "max",
            "", "", 0, ""]
    lease_keys = [keys.job(job_id), keys.job_todo(job_id), keys.job_tiles(job_id), keys.job_chunks(job_id),
                  keys.LEASES, keys.lease(job_id, "c-other"), keys.worker_inflight(worker), keys.worker(worker),
                  keys.AUDITS, keys.job_audits(job_id), keys.job_leases(job_id)]
    assert int(script(keys=lease_keys, args=args)[0]) == GrantCode.MOVED  # the head is not c-other
    assert app.redis.llen(keys.job_todo(job_id)) == 1 and app.redis.zcard(keys.LEASES) == 0


def test_ending_a_job_with_an_outdated_view_changes_nothing_and_a_fresh_read_ends_it(app: HydraCelery) -> None:
    workers = add_workers(app, 2)
    job_id = pi_job(app, 20_000)
    sent: list[tuple[dict[str, Any], int, str]] = []
    dispatch(app.redis, app.settings, CapacityRouter(), lambda c, a, w, r: sent.append((c, a, w)))
    leased = sorted(c["chunk_id"] for c, _, _ in sent)
    script = app.redis.register_script(__import__("hydra_tasks.lua", fromlist=["source"]).source("finish"))
    # A view taken before the last grant: one lease fewer and an older 'dispatched' counter.
    old = {"dispatched": str(len(leased) - 1), "redispatched": "0", "waiting": [],
           "leased": [[c, next(w for s, _, w in sent if s["chunk_id"] == c), ""] for c in leased[:-1]]}
    old_keys = [k for c, h, _ in old["leased"] for k in (keys.lease(job_id, c), keys.worker_inflight(h))]
    result = script(keys=[keys.job(job_id), keys.JOBS_ACTIVE, keys.job_todo(job_id), keys.LEASES,
                          keys.job_tiles(job_id), keys.job_leases(job_id), *old_keys],
                    args=["cancelled", repr(time.time()), "{}", job_id, json.dumps(old)])
    assert int(result) == -3
    assert store.get_job(app.redis, job_id).state == "running" and app.redis.zcard(keys.LEASES) == len(leased)
    assert Scripts(app.redis).finish(job_id, "cancelled", now=time.time(), fields={})
    assert app.redis.zcard(keys.LEASES) == 0 and all(app.redis.scard(keys.worker_inflight(w)) == 0 for w in workers)


def test_a_grant_that_cannot_complete_writes_nothing(app: HydraCelery) -> None:
    """Redis does not roll a script back: GRANT checks everything before its first write."""
    (worker,) = add_workers(app, 1)
    job_id = pi_job(app, 5_000)
    app.redis.rpush(keys.job_todo(job_id), "c-without-spec")
    with pytest.raises(redis.ResponseError, match="has no spec"):
        Scripts(app.redis).grant(job_id, worker, "r", capacity=2, now=time.time(), lease_s=1.0, rate=1e8)
    assert app.redis.lrange(keys.job_todo(job_id), 0, -1) == ["c-without-spec"]  # not popped, not lost
    assert app.redis.zcard(keys.LEASES) == 0 and app.redis.scard(keys.worker_inflight(worker)) == 0


def test_a_forged_tiny_elapsed_time_cannot_inflate_a_workers_modelled_speed(app: HydraCelery) -> None:
    """Claims are bounded by what the control plane saw: a holder with a window of 2 computed a
    chunk for at least half the dispatch-to-receipt interval, whatever it says."""
    from hydra_tasks.worker.registry import get_worker

    app = create_app(app.settings.with_(pi_chunk_samples=10_000_000))
    (worker,) = add_workers(app, 1)
    job_id = pi_job(app, 10_000_000)
    sent: list[tuple[dict[str, Any], int, str]] = []
    dispatch(app.redis, app.settings, CapacityRouter(), lambda c, a, w, r: sent.append((c, a, w)))
    [(chunk, attempt, _)] = sent
    before = get_worker(app.redis, worker)
    assert before is not None and before.rate("pi") == 1e8
    result = run_chunk(chunk, attempt=attempt, worker_id=worker, region="r")
    result["elapsed_s"] = 0.001  # "10^10 samples/s": not in the digest, so the result is otherwise valid
    time.sleep(0.4)  # what the control plane sees: about 0.4 s from dispatch to receipt
    assert collect.collect(app.redis, app.settings, result) == "merged"
    after = get_worker(app.redis, worker)
    assert after is not None
    # Believed, the claim would have made it 0.7 x 1e8 + 0.3 x 1e10 = 3.07e9 samples/s (30x).
    assert after.rate("pi") < 1.3 * before.rate("pi"), after.rate("pi")
    entry = json.loads(app.redis.lindex(keys.job_log(job_id), -1))
    assert entry["claimed_s"] == 0.001 and entry["elapsed_s"] >= 0.2 - 1e-3


def test_a_result_from_a_worker_that_no_longer_holds_the_lease_teaches_no_model(app: HydraCelery) -> None:
    from hydra_tasks.worker.registry import get_worker

    first, second = add_workers(app, 2)
    job_id = pi_job(app, 1_000)
    spec = json.loads(lease_then_move(app, job_id, first, second).spec_json or "{}")
    late = run_chunk(spec, attempt=1, worker_id=first, region="r")
    late["elapsed_s"] = 1e-6
    assert collect.collect(app.redis, app.settings, late) == "merged"  # it was sent the chunk: paid, merged
    model = get_worker(app.redis, first)
    assert model is not None and model.rate("pi") == 1e8 and model.perf_pi.observations == 0


def test_a_ghost_claiming_ten_trillion_samples_a_second_does_not_get_most_of_a_job(app: HydraCelery) -> None:
    """A speed that rests on a worker's own claim counts for no more than the confirmed workers', and
    its claimed processes count as one until its speed is confirmed."""
    from hydra_tasks.scheduling.cluster import snapshot

    app = create_app(app.settings.with_(adaptive=True, target_chunk_s=1.0, min_chunk_s=0.1))
    (honest,) = add_workers(app, 1)
    app.redis.hset(keys.worker(honest), mapping={"rate:pi": "1e8", "n:pi": "5"})  # confirmed by 5 chunks
    now = time.time()
    registry.register(app.redis, registry.WorkerInfo(
        worker_id="ghost@test", region="r", host="test", pid=1, cores=256, concurrency=256, pi_samples_per_s=1e13,
        mandelbrot_iters_per_s=1e13, state=WorkerState.ONLINE, started_at=now, last_seen=now))
    assert snapshot(app.redis, app.settings).workers["ghost@test"].rate("pi") == 1e8
    samples = 10**10
    job_id = pi_job(app, samples)
    sent: list[tuple[dict[str, Any], int, str]] = []
    dispatch(app.redis, app.settings, CapacityRouter(), lambda c, a, w, r: sent.append((c, a, w)))
    ghost = sum(c["units"] for c, _, w in sent if w == "ghost@test")
    # One process' window (2 chunks, whatever 256 processes it claims) at the confirmed speed, not 10^13 x 1 s.
    assert 0 < ghost <= 2 * 1e8 * 1.0 and sum(w == "ghost@test" for _, _, w in sent) <= 2
    assert ghost < samples // 10 and store.get_job(app.redis, job_id).state == "running"


def test_a_worker_that_went_offline_after_the_dispatchers_snapshot_is_granted_nothing(app: HydraCelery) -> None:
    """A revocation (or shutdown) between the dispatcher's read and its GRANT: the script sees it."""
    (worker,) = add_workers(app, 1)
    job_id = pi_job(app, 5_000)
    registry.set_offline(app.redis, worker)
    grant = Scripts(app.redis).grant(job_id, worker, "r", capacity=2, now=time.time(), lease_s=1.0, rate=1e8,
                                     cut=lambda chunk_id, start, count: json.dumps(
                                         {"job_id": job_id, "chunk_id": chunk_id, "kind": "pi",
                                          "params": {"seed": 1, "start": start, "count": count}, "units": count}),
                                     cut_units=1_000)
    assert grant.code is GrantCode.FULL
    assert app.redis.zcard(keys.LEASES) == 0 and app.redis.scard(keys.worker_inflight(worker)) == 0


def test_a_merge_sends_no_script_exists_and_survives_a_server_that_forgot_its_scripts(app: HydraCelery) -> None:
    """MERGE goes by EVALSHA at the end of its pipeline, without redis-py's SCRIPT EXISTS round trip;
    after SCRIPT FLUSH (a restart, a failover) it loads the script and merges once, and the writes
    queued before it in the same pipeline run once."""
    (worker,) = add_workers(app, 1)
    job_id = pi_job(app, 3_000)
    lua = Scripts(app.redis)

    def exists_calls() -> int:
        return int(app.redis.info("commandstats").get("cmdstat_script|exists", {}).get("calls", 0))

    def cut(chunk_id: str, start: int, count: int) -> str:
        return json.dumps({"job_id": job_id, "chunk_id": chunk_id, "kind": "pi",
                           "params": {"seed": 11, "start": start, "count": count}, "units": count})

    before = exists_calls()
    for attempt in range(3):
        grant = lua.grant(job_id, worker, "r", capacity=2, now=time.time(), lease_s=60.0, rate=1e8, cut=cut,
                          cut_units=1_000)
        assert grant.code is GrantCode.LEASED and grant.chunk_id
        if attempt == 2:
            app.redis.script_flush()
        code, done, _, _ = lua.merge(job_id, grant.chunk_id, worker, "{}", now=time.time(), elapsed_ms=5,
                                     units=1_000, increments={"units_done": 1_000},
                                     before=lambda pipe: pipe.hincrby("test:before", "runs", 1))
        assert code is MergeCode.MERGED and done == 1_000 * (attempt + 1)
    assert exists_calls() == before, "a merge asked SCRIPT EXISTS"
    assert app.redis.hget("test:before", "runs") == "3"  # the flushed attempt's earlier writes ran once
    app.redis.delete("test:before")


class _Units:
    """A rider that reads the job's units_done right after MERGE, in its round trip."""

    size = 1

    def __init__(self, job_id: str) -> None:
        self.job_id, self.replies = job_id, None

    def queue(self, pipe: Any) -> None:
        pipe.hget(keys.job(self.job_id), "units_done")

    def take(self, replies: list[Any]) -> None:
        self.replies = replies


def test_reads_riding_on_a_merge_see_it_and_are_dropped_if_the_script_had_to_be_sent_again(
        app: HydraCelery) -> None:
    """The intake reads what its next dispatch starts with in MERGE's round trip (dispatcher.Prefetch): the
    reads come after the script, so they see the merge; after SCRIPT FLUSH they were made before the
    script ran, so they are dropped (the dispatch reads again) and the chunk still merges once."""
    (worker,) = add_workers(app, 1)
    job_id = pi_job(app, 3_000)
    lua = Scripts(app.redis)

    def cut(chunk_id: str, start: int, count: int) -> str:
        return json.dumps({"job_id": job_id, "chunk_id": chunk_id, "kind": "pi",
                           "params": {"seed": 11, "start": start, "count": count}, "units": count})

    for attempt in range(2):
        grant = lua.grant(job_id, worker, "r", capacity=2, now=time.time(), lease_s=60.0, rate=1e8, cut=cut,
                          cut_units=1_000)
        assert grant.code is GrantCode.LEASED and grant.chunk_id
        if attempt == 1:
            app.redis.script_flush()
        rider = _Units(job_id)
        code, done, _, _ = lua.merge(job_id, grant.chunk_id, worker, "{}", now=time.time(), elapsed_ms=5,
                                     units=1_000, increments={"units_done": 1_000}, rider=rider)
        assert code is MergeCode.MERGED and done == 1_000 * (attempt + 1)
        assert rider.replies == ([str(done)] if attempt == 0 else None)
    # A dispatch from reads that rode on a merge refills the slot that merge freed.
    pi_job(app, 10_000, seed=12)
    sent: list[dict[str, Any]] = []

    def publish(chunk: dict[str, Any], attempt: int, worker_id: str, region: str) -> None:
        sent.append(chunk)

    window = dispatch(app.redis, app.settings, CapacityRouter(), publish)
    assert window == len(sent) >= 1
    prefetch = Prefetch(app.redis)
    assert prefetch.guessed == [worker]
    first = sent[0]
    code, _, _, _ = lua.merge(first["job_id"], first["chunk_id"], worker, "{}", now=time.time(), elapsed_ms=5,
                              units=first["units"], increments={"units_done": first["units"]}, rider=prefetch)
    assert code is MergeCode.MERGED and prefetch.replies is not None
    assert prefetch.replies[3:] == [window - 1]  # the worker's in-flight set, read after the merge
    assert dispatch(app.redis, app.settings, CapacityRouter(), publish, prefetch=prefetch) == 1
    assert len({c["chunk_id"] for c in sent}) == window + 1
