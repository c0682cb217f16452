"""The Redis schema documented in hydra_tasks/keys.py stays true: every hash field the code writes is listed.

The static tests read the field names the code declares; the Redis test drives a whole job life
(lazy π cuts, a deadline, a backup, an expiry, a decline, a failure, a rejection, a duplicate, an
adaptive Mandelbrot job, a grid report, a transfer) through the real modules against a real Redis,
then checks every field found in every hash and journal entry against the docstring.
"""

from __future__ import annotations

import re
import time
from typing import Any, Iterable

import pytest
from nacl.signing import SigningKey

from hydra_tasks import keys
from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.grid.site import apply_report, parse_report, signed_report
from hydra_tasks.jobs import collect, store
from hydra_tasks.jobs.spec import parse_job_spec
from hydra_tasks.jobs.view import COUNTERS
from hydra_tasks.ledger import book
from hydra_tasks.lua import Scripts
from hydra_tasks.models import WorkerState
from hydra_tasks.scheduling import planner
from hydra_tasks.scheduling.dispatcher import dispatch
from hydra_tasks.scheduling.router import router_for
from hydra_tasks.trust import identity
from hydra_tasks.worker import performance, registry
from hydra_tasks.trust import results as signed_results
from hydra_tasks.worker.compute import decline
from hydra_tasks.worker.compute import run_chunk as compute_chunk

Sent = list[tuple[dict[str, Any], int, str]]


def documented_fields() -> dict[str, list[str]]:
    """Key pattern (e.g. ``hydra:job:{id}``) -> the field names its block in keys.py lists."""
    doc = keys.__doc__ or ""
    section = doc.split("\nFields\n------\n", 1)
    assert len(section) == 2, "keys.py's docstring has no 'Fields' section"
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in section[1].splitlines():
        if line.startswith("hydra:"):
            current = blocks.setdefault(line.strip(), [])
        elif current is not None and (m := re.match(r"^    (\S+)  ", line)):
            current.append(m.group(1))
    return blocks


def matcher(names: Iterable[str]) -> re.Pattern[str]:
    """A regex matching the documented names, where ``<x>`` stands for any text."""
    parts = [".+".join(re.escape(p) for p in re.split(r"<[^>]+>", name)) for name in names]
    return re.compile("^(?:" + "|".join(parts) + ")$")


def undocumented(key_pattern: str, seen: Iterable[str]) -> list[str]:
    names = documented_fields()[key_pattern]
    assert names, f"{key_pattern} documents no fields"
    pattern = matcher(names)
    return sorted({f for f in seen if not pattern.match(f)})


# --- static checks -----------------------------------------------------------------------------------
def test_every_hash_in_the_key_table_has_a_field_block_except_the_maps() -> None:
    table = re.findall(r"^(hydra:\S+)[ ]+(hash|stream)[ ]", keys.__doc__ or "", re.M)
    blocks = documented_fields()
    maps = {"hydra:job:{id}:chunks", "hydra:job:{id}:parts", "hydra:job:{id}:suspect",
            "hydra:job:{id}:audits", "hydra:ledger:accounts", "hydra:ledger:balances",
            "hydra:ledger:earned", "hydra:ledger:nonces", "hydra:ledger:transfers", "hydra:ledger:daily",
            "hydra:profiles", "hydra:profile_teams", "hydra:worker_keys", "hydra:teams:members",
            "hydra:grid:observed:{zone}"}
    assert sorted(k for k, _ in table if k not in maps) == sorted(blocks)


def test_the_job_counters_and_the_fields_a_worker_registers_are_documented() -> None:
    assert undocumented("hydra:job:{id}", COUNTERS) == []
    assert undocumented("hydra:worker:{id}", registry._REGISTERED_FIELDS) == []


def test_the_metrics_sum_the_counters_finish_adds_to_the_totals() -> None:
    from hydra_tasks.exporter import JOB_COUNTERS

    assert tuple(field for field, _, _ in JOB_COUNTERS) == keys.JOB_TOTAL_COUNTERS
    assert undocumented("hydra:jobs:totals", ["done", "failed", "cancelled", *keys.JOB_TOTAL_COUNTERS]) == []


def test_the_field_matcher_tells_families_from_strangers() -> None:
    pattern = matcher(["leased:<worker>", "rate:<kind>", "ok"])
    assert all(pattern.match(f) for f in ("leased:a@h", "rate:pi", "ok"))
    assert not any(pattern.match(f) for f in ("leased:", "rate", "okay", "x_ok"))


# --- a real job life against a real Redis ---------------------------------------------------------------
@pytest.fixture
def app(redis_only: HydraCelery) -> HydraCelery:
    redis_only.redis.flushdb()
    return create_app(redis_only.settings)


def _register(app: HydraCelery, worker_id: str, region: str, key: SigningKey) -> None:
    now = time.time()
    registry.register(app.redis, registry.WorkerInfo(
        worker_id=worker_id, region=region, host="test", pid=1, cores=2, concurrency=1,
        pi_samples_per_s=1e6, mandelbrot_iters_per_s=1e6, state=WorkerState.ONLINE, started_at=now, last_seen=now,
        public_key=identity.public_hex(key)))
    book.open_account(app.redis, identity.public_hex(key))


def _dispatch(app: HydraCelery, workers: Iterable[str]) -> Sent:
    for worker_id in workers:
        registry.heartbeat(app.redis, worker_id)
    sent: Sent = []
    dispatch(app.redis, app.settings, router_for(app.settings, app.redis),
             lambda c, a, w, r: sent.append((c, a, w)))
    return sent


def _submit(app: HydraCelery, raw: dict[str, Any]) -> str:
    spec = parse_job_spec(raw)
    job_id = store.new_job_id()
    return store.create_job(app.redis, spec, planner.plan(job_id, spec, app.settings), job_id=job_id)


def _lease_fields(app: HydraCelery, into: set[str]) -> None:
    for member in app.redis.zrange(keys.LEASES, 0, -1):
        into |= set(app.redis.hgetall(keys.lease(*keys.split_lease_member(member))))
    for job_id in app.redis.zrange(keys.JOBS, 0, -1):  # chunks re-queued keep their lease hash
        for chunk_id in app.redis.lrange(keys.job_todo(job_id), 0, -1):
            into |= set(app.redis.hgetall(keys.lease(job_id, chunk_id)))


@pytest.mark.integration  # starts a real Redis (under a second)
def test_every_field_a_job_life_writes_is_documented(app: HydraCelery) -> None:
    r, scripts = app.redis, Scripts(app.redis)
    alice, bob = SigningKey.generate(), SigningKey.generate()
    _register(app, "a@test", "eu-north", alice)
    _register(app, "b@test", "us-east", bob)
    signing = {"a@test": alice, "b@test": bob}

    def run_chunk(c: dict[str, Any], *, attempt: int, worker_id: str, region: str) -> dict[str, Any]:
        return compute_chunk(c, attempt=attempt, worker_id=worker_id, region=region, key=signing[worker_id])

    workers = ("a@test", "b@test")
    lease_fields: set[str] = set()

    pi = _submit(app, {"kind": "pi", "params": {"samples": 4_000_000, "seed": 3}})
    _submit(app, {"kind": "pi", "params": {"samples": 2_000_000, "seed": 4}, "deadline": time.time() + 7200})
    sent = _dispatch(app, workers)
    assert sent, "nothing was dispatched"
    _lease_fields(app, lease_fields)

    # A backup copy, an expired lease, a decline, a kernel failure, a duplicate and a forged result.
    assert len(sent) >= 4, sent
    (c0, a0, w0), (c1, _, w1), (c2, a2, w2), (c3, a3, w3) = sent[:4]
    assert scripts.backup(c0["job_id"], c0["chunk_id"], "b@test" if w0 == "a@test" else "a@test",
                          capacity=100) is not None
    assert scripts.requeue(c1["job_id"], c1["chunk_id"], now=time.time() + 10**6, counter="expiries",
                           force=False).count == 1
    performance.record_expiry(r, w1)
    assert collect.collect(r, app.settings, decline(c2, attempt=a2, worker_id=w2, region="r", reason="test",
                                                      key=signing[w2])) \
        == "declined"
    failed = signed_results.sign({**run_chunk(c3, attempt=a3, worker_id=w3, region="r"),
                                  "error": "KernelError: simulated"}, signing[w3])
    assert collect.collect(r, app.settings, failed) == "rejected"  # a failure, below HYDRA_MAX_CHUNK_FAILURES
    _lease_fields(app, lease_fields)
    result = run_chunk(c0, attempt=a0, worker_id=w0, region="r")
    assert collect.collect(r, app.settings, result) == "merged"
    assert collect.collect(r, app.settings, result) == "duplicate"
    (c, a, w), *others = _dispatch(app, workers)
    forged = run_chunk(c, attempt=a, worker_id=w, region="r")
    forged["payload"] = {**forged["payload"], "hits": forged["payload"]["hits"] + 1}
    assert collect.collect(r, app.settings, forged) == "rejected"
    _lease_fields(app, lease_fields)
    for c, a, w in others:
        collect.collect(r, app.settings, run_chunk(c, attempt=a, worker_id=w, region="r"))

    # An adaptive Mandelbrot job (preview, then tiles), a job that fails, one that is cancelled.
    mandel = _submit(app, {"kind": "mandelbrot", "params": {"width": 96, "height": 64, "max_iter": 200}})
    failing = _submit(app, {"kind": "pi", "params": {"samples": 1000}})
    store.fail_job(r, failing, "test failure")
    store.cancel_job(r, _submit(app, {"kind": "pi", "params": {"samples": 1000}}))

    for _ in range(200):
        _lease_fields(app, lease_fields)
        sent = _dispatch(app, workers)
        for c, a, w in sent:
            collect.collect(r, app.settings, run_chunk(c, attempt=a, worker_id=w, region="r"))
        if store.job_state(r, pi).is_final and store.job_state(r, mandel).is_final:  # type: ignore[union-attr]
            break
        if not sent:  # expired or re-queued chunks wait for their lease: take them back now
            for member in r.zrange(keys.LEASES, 0, -1):
                scripts.requeue(*keys.split_lease_member(member), now=time.time() + 10**6, counter="expiries",
                                force=False)
    assert store.get_job(r, pi).state == "done"
    assert store.get_job(r, mandel).state == "done" and r.hget(keys.job(mandel), "tiled") == "1"

    # A signed grid report and a signed transfer.
    report, message, signature = parse_report(signed_report(alice, "a@test", "FR", 0.5))
    apply_report(r, report, message, signature, zone_known=lambda zone: True)
    book.transfer(r, book.signed_transfer(alice, identity.public_hex(bob), 1))

    job_fields = {f for j in r.zrange(keys.JOBS, 0, -1) for f in r.hgetall(keys.job(j))}
    assert {"carbon_threshold", "tiled", "iters_per_px", "energy_j", "result", "error", "started_at"} <= job_fields
    assert undocumented("hydra:job:{id}", job_fields) == []
    worker_job_fields = {f for j in r.zrange(keys.JOBS, 0, -1) for f in r.hgetall(keys.job_workers(j))}
    assert undocumented("hydra:job:{id}:workers", worker_job_fields) == []
    assert {"backup", "expiries", "declines", "failures", "rejections", "queued"} <= lease_fields
    assert undocumented("hydra:lease:{job}:{chunk}", lease_fields) == []
    worker_fields = {f for w in workers for f in r.hgetall(keys.worker(w))}
    assert {"rate:pi", "rate:mandelbrot", "busy_ms", "grid_zone", "expired", "failed"} <= worker_fields
    assert undocumented("hydra:worker:{id}", worker_fields) == []
    assert undocumented("hydra:sustainability", r.hgetall(keys.SUSTAINABILITY)) == []
    assert undocumented("hydra:ledger:stats", r.hgetall(keys.LEDGER_STATS)) == []
    from hydra_tasks import history
    from hydra_tasks.scheduling.router import carbon_provider

    assert history.sample_carbon(r, app.settings, carbon_provider(app.settings))  # the sweeper's once-a-minute sample
    history_fields = {f for k in r.scan_iter(keys.history(0).rsplit(":", 1)[0] + ":*") for f in r.hgetall(k)}
    assert any(f.startswith("chunks:") for f in history_fields) and any(f.startswith("speed:") for f in history_fields)
    assert any(f.startswith("carbon:") for f in history_fields)
    assert undocumented("hydra:history:{hour}", history_fields) == []
    entries = r.xrange(keys.LEDGER_JOURNAL)
    assert {e["type"] for _, e in entries} == {"mint", "transfer"}
    assert undocumented("hydra:ledger:journal", {f for _, e in entries for f in e}) == []
