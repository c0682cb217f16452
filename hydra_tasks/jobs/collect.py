"""Collect: verify a volunteer's chunk result, merge it exactly once, and finalize the job.

Runs on the control plane only. Delivery is at-least-once (acks_late, re-sent leases), so
the merge is keyed by chunk id inside one Lua script: a chunk computed twice counts once.
Kind-specific steps (verification, the work measure, what follows a merge, the final result)
come from the kind's :class:`~hydra_tasks.jobs.KindHandler`.
"""

from __future__ import annotations

import enum
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import redis

from .. import history, keys
from ..errors import HydraError, ResultRejected, SignatureError, SpotCheckFailed
from ..grid import CarbonProvider, accounting
from ..grid.regions import parse_regions, region_signals
from ..grid.site import worker_signals
from ..ledger import book as ledger
from ..ledger import rewards
from ..lua import Deferred, Holders, MergeCode, RequeueCode, Rider, Scripts, scripts, undo_fields
from ..models import ChunkResult, ChunkSpec, JobKind, JobState
from ..scheduling.cluster import ClusterSnapshot, capped, slots_of, snapshot
from ..scheduling.router import carbon_provider
from ..settings import JOB_DETAIL_S_DEFAULT, Settings
from ..trust import audits
from ..trust import reputation as trust_reputation
from ..trust import results as signed_results
from ..worker import performance
from ..worker.compute import DECLINED
from ..worker import registry
from ..worker.registry import WorkerInfo, parse_record
from . import handler, store

STAGED_TTL_S = 3600  # a finalizer's staged result blobs, if it dies before FINISH renames them

log = logging.getLogger(__name__)


class Outcome(str, enum.Enum):
    """What became of one result."""

    MERGED = "merged"
    DUPLICATE = "duplicate"      # merged before: counted once
    IGNORED = "ignored"          # unknown chunk, a job that ended, a chunk never sent to this worker, or a quarantined worker
    REJECTED = "rejected"        # malformed or failed verification: re-sent elsewhere
    DECLINED = "declined"        # handed back by a paused worker: re-sent elsewhere, not a failure
    FAILED = "failed"            # the chunk failed too often: the job failed
    FORGED = "forged"            # not signed by the key registered for the worker it names: dropped, counted


@dataclass(frozen=True)
class _Lease:
    dispatched_at: float | None
    holders: Holders
    reputation: int = 0  # the reporting worker's clean spot checks since it was last caught
    alert: bool = False  # a worker was caught in the last hour (trust/reputation.py)
    worker: WorkerInfo | None = None  # the reporting worker's record, read with the lease
    generation: str | None = None  # the registry's generation, read with the lease (cluster.snapshot)
    window: int = 0  # the chunks its holder could hold when it was granted (0: not recorded)


def collect(client: redis.Redis, settings: Settings, data: Mapping[str, Any], *, now: float | None = None,
            touch: bool = False, rider: Rider | None = None, pre: Preread | None = None) -> Outcome:
    """Process one ChunkResult. ``touch``: the result proves its worker alive (the intake's signed
    results): refresh its ``last_seen``, in the merge's own round trip when it merges. ``rider``: reads
    sent right after MERGE in its round trip (the intake's next dispatch), if it gets that far. ``pre``:
    the first reads, if the caller made them already (:class:`Preread`)."""
    now = time.time() if now is None else now
    touched: list[bool] = []
    outcome = _collect(client, settings, data, now, touched if touch else None, rider, pre)
    worker_id = data.get("worker_id") if isinstance(data, Mapping) else None
    if touch and not touched and isinstance(worker_id, str):
        registry.touch(client, worker_id, now)
    return outcome


def _collect(client: redis.Redis, settings: Settings, data: Mapping[str, Any], now: float,
             touched: list[bool] | None, rider: Rider | None = None, pre: Preread | None = None) -> Outcome:
    try:
        result = ChunkResult.from_json(data)
    except ResultRejected as exc:
        log.warning("dropping malformed result: %s", exc)
        return Outcome.REJECTED
    found = _read(client, result, pre)
    if found is None:
        return Outcome.IGNORED  # unknown chunk, deleted job, or a job that already ended
    chunk, lease, public_key = found
    if public_key:  # a worker with a registered key speaks only through signed results
        try:
            signed_results.check(result, public_key)
        except SignatureError as exc:
            client.hincrby(keys.RESULTS_DROPPED, "bad signature" if result.signature else "unsigned", 1)
            log.warning("dropped a result for chunk %s of job %s in the name of %s: %s", result.chunk_id,
                        result.job_id, result.worker_id, exc)
            return Outcome.FORGED
    lua = scripts(client)
    if result.error is not None and result.error.startswith(DECLINED):
        lua.requeue(result.job_id, result.chunk_id, now=now, counter="declines", force=True,
                    reporter=result.worker_id, holders=lease.holders)
        return Outcome.DECLINED
    if result.error is not None:
        return _failed(client, settings, lua, result, lease, now)
    try:
        increments = _verify(chunk, result)
        # An audit chunk's result is compared with the audited result after its merge (trust/audits.py).
        audit = keys.is_audit_chunk(chunk.chunk_id)
        checked = None if audit else _spot_check(client, settings, chunk, result, lease, now)
    except ResultRejected as exc:
        log.warning("rejected chunk %s of job %s from %s: %s", result.chunk_id, result.job_id, result.worker_id, exc)
        lua.requeue(result.job_id, result.chunk_id, now=now, counter="rejections", force=True,
                    reporter=result.worker_id, holders=lease.holders)
        if isinstance(exc, SpotCheckFailed):  # quarantined, its other chunks taken back, its past revoked
            from ..trust import consequences

            consequences.catch(client, settings, result.worker_id, str(exc), now=now)
        return Outcome.REJECTED
    remote = checked.remote if checked else []

    def before(pipe: redis.client.Pipeline) -> None:  # sent with MERGE: one round trip, one fsync
        if checked is not None:
            trust_reputation.queue_passed(pipe, result.worker_id, chunk.kind, checked.cost, settled=not remote)
        if touched is not None and lease.worker is not None:
            pipe.hset(keys.worker(result.worker_id), "last_seen", repr(now))
            touched.append(True)
    return _merge(client, settings, lua, chunk, result, increments, lease, now, remote=remote, before=before,
                  rider=rider)


class Preread:
    """The reads a result's collection starts with (:func:`_read`), queued on another pipeline: the
    intake's, with the reads that identify the sender, so that a result costs one round trip less."""

    size = 6

    def __init__(self, job_id: str, chunk_id: str, worker_id: str) -> None:
        self.ids = (job_id, chunk_id, worker_id)
        self.replies: list[Any] | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> "Preread | None":
        job_id, chunk_id, worker_id = data.get("job_id"), data.get("chunk_id"), data.get("worker_id")
        if isinstance(job_id, str) and isinstance(chunk_id, str) and isinstance(worker_id, str):
            return cls(job_id, chunk_id, worker_id)
        return None

    def queue(self, pipe: redis.client.Pipeline) -> None:
        job_id, chunk_id, worker_id = self.ids
        pipe.hget(keys.job_chunks(job_id), chunk_id)
        pipe.hget(keys.job(job_id), "state")
        pipe.hmget(keys.lease(job_id, chunk_id), "dispatched_at", "worker", "backup", "window")
        pipe.hgetall(keys.worker(worker_id))  # the whole record: the merge's speed model and reward use it
        pipe.hget(keys.SPOT_CHECKS, "last_caught_at")
        pipe.get(keys.WORKERS_GEN)  # whether this process's view of the fleet is still current (cluster.snapshot)

    def take(self, replies: list[Any]) -> None:
        """Keep the replies, unless one is an error (a key of another type): :func:`_read` reads again."""
        self.replies = None if any(isinstance(r, Exception) for r in replies) else replies


def _read(client: redis.Redis, result: ChunkResult,
          pre: Preread | None = None) -> tuple[ChunkSpec, _Lease, str] | None:
    """The chunk's spec, its lease and the key registered for the worker the result names, in one
    round trip (none with ``pre``, read for this result); None if the chunk or its job is gone or
    over, or the worker is quarantined."""
    if pre is not None and pre.replies is not None and pre.ids == (result.job_id, result.chunk_id, result.worker_id):
        replies = pre.replies
    else:
        reads = client.pipeline(transaction=False)
        Preread(result.job_id, result.chunk_id, result.worker_id).queue(reads)
        replies = reads.execute()
    chunk_json, state_name, (dispatched_at, holder, backup, window), record, caught_at, generation = replies
    public_key, audits, quarantined = record.get("public_key"), record.get("audits_passed"), record.get("quarantined")
    if chunk_json is None or state_name is None or JobState(state_name).is_final:
        return None
    if quarantined:  # caught by a spot check: nothing it sends counts until an operator lifts it
        log.warning("ignored a result for chunk %s of job %s from quarantined %s", result.chunk_id, result.job_id,
                    result.worker_id)
        return None
    chunk = ChunkSpec.from_json(json.loads(chunk_json))
    alert = bool(caught_at) and time.time() - float(caught_at) < trust_reputation.ALERT_S
    return (chunk, _Lease(float(dispatched_at) if dispatched_at else None, Holders.of(holder, backup),
                          int(audits or 0), alert, parse_record(record), generation, int(window or 0)), public_key or "")


def _verify(chunk: ChunkSpec, result: ChunkResult) -> dict[str, int]:
    """The job counters the result adds, once it passed the digest and the kind's checks."""
    if not result.digest_ok():
        raise ResultRejected("digest does not match the payload")
    increments = handler(chunk.kind).verify(chunk, result.payload)
    if not all(type(v) is int for v in increments.values()):
        raise ResultRejected("the result's counters are not integers")
    return increments


@dataclass(frozen=True)
class _Checked:
    cost: int          # work the spot check recomputed here
    remote: list[int]  # π blocks left for an audit chunk


def _spot_check(client: redis.Redis, settings: Settings, chunk: ChunkSpec, result: ChunkResult, lease: _Lease,
                now: float) -> _Checked:
    """Recompute parts of the result picked now, as many as the worker's reputation calls for, and
    compare them exactly (issue 12; trust/audits.py decides what is recomputed here and what by an
    audit chunk). The pass is counted in ``hydra:spot_checks`` with the merge (``queue_passed``).
    SpotCheckFailed propagates (the worker is caught)."""
    picks = trust_reputation.picks(chunk.kind, lease.reputation, alert=lease.alert)
    cost, remote = audits.check(client, settings, chunk, result.payload, result.worker_id, picks=picks, now=now)
    return _Checked(cost, remote)


def _merge(client: redis.Redis, settings: Settings, lua: Scripts, chunk: ChunkSpec, result: ChunkResult,
           increments: dict[str, int], lease: _Lease, now: float, *, remote: list[int],
           before: Callable[[redis.client.Pipeline], None] | None = None, rider: Rider | None = None) -> Outcome:
    """Merge a verified result once, with its reward; learn from it; ask for its audit chunk
    (``remote``: the blocks left to audit) or settle the audit it is; finalize the job if it was the last."""
    kind = handler(chunk.kind)
    # The fleet-wide figures (median speed, the carbon-blind mix) come from this process's view of the
    # fleet, reused for up to HYDRA_FLEET_VIEW_S; the worker's own record was read fresh with the lease,
    # so its speed model is updated from its current value, never from a cached one.
    snap = snapshot(client, settings, now=now, generation=lease.generation, generation_read=True)
    holder = lease.worker
    live = holder is not None and holder.worker_id in snap.workers
    if holder is not None and live:
        holder = capped(holder, snap.reference)
    slots = slots_of(holder, settings) if holder is not None and live else 1
    # a window of bundles (scheduling/grants.bundle_size) holds more chunks than the usual window
    elapsed_s, trusted = observed_elapsed(result, lease, max(slots, lease.window), now)
    carbon = _carbon(settings, snap, holder, chunk, result, elapsed_s, now)
    mint = _mint(settings, snap, holder, chunk, result, kind.reward_work(chunk, increments), carbon, now)
    audit = keys.is_audit_chunk(chunk.chunk_id)
    # An audit is no chunk of the job's work: no speed to learn, not in the chunk log.
    log_entry, perf = ("", None) if audit else _learn(holder if trusted else None, chunk, result,
                                                      kind.work_done(chunk, result.payload), elapsed_s, now)
    keep = audit or bool(chunk.params.get("preview"))  # in no output: a catch takes back its tokens only
    # The bookkeeping (speed model, carbon totals, the dashboard's history) goes into MERGE itself: applied
    # only if the chunk merges, in the same atomic step (no round trip, and nothing for a deleted job).
    deferred = Deferred()
    if perf is not None and holder is not None:
        performance.record_observation(deferred, holder.worker_id, chunk.kind.value, perf)
    if not audit:
        history.record_chunk(deferred, now=now, worker_id=result.worker_id, kind=chunk.kind.value,
                             rate=perf.rate if perf else None)
    accounting.record(deferred, chunk.job_id, carbon)
    code, done, total, _ = lua.merge(
        result.job_id, result.chunk_id, result.worker_id, json.dumps(dict(result.payload)), now=now,
        elapsed_ms=int(elapsed_s * 1000), units=chunk.units, increments=increments, mint_json=mint,
        holders=lease.holders, log_entry=log_entry,
        undo=undo_fields(chunk.units, increments, keep, json.dumps(chunk.to_json())), deferred=deferred,
        before=before, rider=rider,
    )
    if code is MergeCode.NOT_SENT:
        log.warning("chunk %s of job %s was never sent to %s; its result is ignored", chunk.chunk_id, chunk.job_id,
                    result.worker_id)
        return Outcome.IGNORED
    if code is MergeCode.MERGED:
        if remote:  # before any finalize: a job with audits pending is not finalized
            audits.request(client, chunk, result.worker_id, remote, now=now)
            if not client.hexists(keys.job(chunk.job_id), "state"):  # cancelled and deleted since MERGE ran
                log.info("job %s was deleted while chunk %s merged; dropping its audit request", chunk.job_id,
                         chunk.chunk_id)
                store.drop_remnants(client, chunk.job_id)
                return Outcome.MERGED
        if audit:
            audits.settle(client, settings, chunk, list(result.payload["audit_hits"]), result.worker_id, now=now)
        else:
            kind.after_merge(client, settings, chunk)
    if code in (MergeCode.MERGED, MergeCode.DUPLICATE) and done == total:
        finalize(client, result.job_id, now=now, detail_s=settings.job_detail_s)
    return {MergeCode.MERGED: Outcome.MERGED, MergeCode.DUPLICATE: Outcome.DUPLICATE}.get(code, Outcome.IGNORED)


def observed_elapsed(result: ChunkResult, lease: _Lease, window: int, now: float) -> tuple[float, bool]:
    """The chunk's compute time as far as the control plane can vouch for it, and whether the
    worker's speed model may learn from it.

    A volunteer reports its own time. No chunk took longer than since it was sent to the lease's
    holder (plus a second of clock slack); and a holder with ``window`` chunks in flight computed
    this one for at least 1/window of that interval, so a forged tiny time cannot raise its modelled
    speed more than ``window``-fold. Results from a worker that is not the current holder (a backup,
    a late former holder) cannot be timed: they update no model."""
    claimed = max(result.elapsed_s, 0.0)
    if lease.dispatched_at is None:
        return claimed, False
    seen = max(now - lease.dispatched_at, 0.0)
    if lease.holders.holder != result.worker_id:
        return min(claimed, seen + 1.0), False
    if claimed > seen + 1.0:  # more time than it had: the clock or the claim is wrong; do not learn
        return seen, False
    return max(claimed, seen / max(window, 1)), True


def _learn(holder: WorkerInfo | None, chunk: ChunkSpec, result: ChunkResult, work: float, elapsed_s: float,
           now: float) -> tuple[str, performance.Performance | None]:
    """The job's chunk-log entry for this result (JSON, written by MERGE) and the worker's updated
    performance model (``holder``, None: no update). The model starts from the worker's record as read
    with the lease (never a cached view); ``elapsed_s`` is the time the control plane vouches for
    (:func:`observed_elapsed`)."""
    kind = chunk.kind.value
    before = (holder.perf_pi if kind == "pi" else holder.perf_mandelbrot) if holder else None
    entry: dict[str, Any] = {"t": now, "worker": result.worker_id, "chunk": chunk.chunk_id, "units": chunk.units,
                             "work": work, "elapsed_s": elapsed_s, "claimed_s": result.elapsed_s}
    perf = None
    if holder is not None and before is not None:
        calibrated = holder.pi_samples_per_s if kind == "pi" else holder.mandelbrot_iters_per_s
        perf = performance.updated(before, calibrated, work, elapsed_s)
        entry["rate"] = perf.rate
        if "est_cost" in chunk.params and before.rate > 0:  # what the model predicted before this result
            entry["predicted_s"] = chunk.params["est_cost"] / before.rate
    if "est_cost" in chunk.params:
        entry["est_cost"] = chunk.params["est_cost"]
    return json.dumps(entry), perf


def _failed(client: redis.Redis, settings: Settings, lua: Scripts, result: ChunkResult, lease: _Lease,
            now: float) -> Outcome:
    taken = lua.requeue(result.job_id, result.chunk_id, now=now, counter="failures", force=True,
                        reporter=result.worker_id, holders=lease.holders)
    if taken.code is not RequeueCode.REQUEUED:
        return Outcome.IGNORED  # not (or no longer) this worker's chunk: nothing to take back
    failures = taken.count
    performance.record_failure(client, result.worker_id)
    log.warning("chunk %s of job %s failed on %s: %s", result.chunk_id, result.job_id, result.worker_id, result.error)
    if failures >= settings.max_chunk_failures:
        store.fail_job(client, result.job_id, f"chunk {result.chunk_id} failed {failures} times; last error: "
                                              f"{result.error}", now=now, detail_s=settings.job_detail_s)
        return Outcome.FAILED
    return Outcome.REJECTED


def _carbon(settings: Settings, snap: ClusterSnapshot, holder: WorkerInfo | None, chunk: ChunkSpec,
            result: ChunkResult, elapsed_s: float, now: float) -> accounting.ChunkCarbon:
    """Energy and carbon of a chunk, and what carbon-blind routing would have emitted.

    The chunk's carbon uses the power its worker really draws (its reported zone and on-site
    renewables, else its region's); the counterfactual is the capacity-weighted mean over the
    live workers, which is where capacity-proportional routing would have spread it."""
    energy = accounting.chunk_energy_j(
        reported_j=result.energy_j, cpu_s=result.cpu_s, elapsed_s=elapsed_s,
        cores=holder.cores if holder else 1, watts_per_core=holder.watts_per_core if holder else settings.watts_per_core)
    regions = parse_regions(settings.regions)
    provider = carbon_provider(settings)
    if holder is not None:
        signals = worker_signals([holder], regions, provider, now=now)
    else:  # an unregistered worker: its region's grid is all we know
        signals = region_signals(regions, {result.region}, provider)
    blind, fleet_fallback = _fleet_carbon(settings, snap, chunk.kind.value, provider, now)
    known = [s.g_co2_per_kwh for s in signals.values() if s.g_co2_per_kwh is not None]
    fallback = fleet_fallback if fleet_fallback is not None else (known[0] if known else 475.0)  # world average
    where = holder.worker_id if holder else result.region
    return accounting.chunk_carbon(energy, where, signals, {}, fallback_g_per_kwh=fallback, blind_g_per_kwh=blind)


def _fleet_carbon(settings: Settings, snap: ClusterSnapshot, kind: str, provider: CarbonProvider,
                  now: float) -> tuple[float | None, float | None]:
    """(the capacity-weighted intensity carbon-blind routing would have used, the fleet's mean known
    intensity), once per view of the fleet: O(fleet) once, not per chunk. None where no worker counts."""
    def compute() -> tuple[float | None, float | None]:
        signals = worker_signals(snap.workers.values(), parse_regions(settings.regions), provider, now=now)
        known = [s.g_co2_per_kwh for s in signals.values() if s.g_co2_per_kwh is not None]
        fallback = sum(known) / len(known) if known else None
        capacity = {w.worker_id: w.rate(kind) * w.concurrency for w in snap.workers.values()}
        total = sum(capacity.values())
        if total <= 0:
            return None, fallback
        mix = sum(accounting.effective_intensity(signals.get(w), fallback if fallback is not None else 475.0) * c
                  for w, c in capacity.items())
        return mix / total, fallback
    return snap.memo(("carbon", kind), compute)


def _mint(settings: Settings, snap: ClusterSnapshot, worker: WorkerInfo | None,
          chunk: ChunkSpec, result: ChunkResult, work: float, carbon: accounting.ChunkCarbon, now: float) -> str:
    """The reward to mint with the merge ('' for none), into the account of the key the worker
    registered (MERGE accepts results only from workers the chunk was sent to)."""
    if not settings.token_incentives:
        return ""
    if worker is None or not worker.public_key:
        log.warning("chunk %s of job %s: %s has no registered key; no tokens minted", chunk.chunk_id, chunk.job_id,
                    result.worker_id)
        return ""
    kind = chunk.kind.value
    median = snap.median_rate(kind)
    reward = rewards.chunk_reward(settings, work=work, speed=worker.rate(kind),
                                  median_speed=worker.rate(kind) if median is None else median,
                                  reliability=worker.reliability,
                                  saved_g=carbon.counterfactual_g - carbon.carbon_g, renewable_kwh=carbon.renewable_kwh)
    if reward.total <= 0:
        return ""
    return ledger.mint_json(worker.public_key, reward, job_id=chunk.job_id, chunk_id=chunk.chunk_id, now=now,
                            proof=signed_results.proof(result))


def finalize(client: redis.Redis, job_id: str, *, now: float | None = None,
             detail_s: float = JOB_DETAIL_S_DEFAULT) -> bool:
    """Compute the job's final result from its merged parts and mark it done, exactly once.

    Safe to run concurrently or again after a crash: only the first call that finds the job
    live changes it. Returns True if this call finished the job."""
    now = time.time() if now is None else now
    # One snapshot: the state, the counters and the parts as of one moment. Read apart, another
    # finalizer could end the job (and drop its parts) between them, and this one would assemble
    # nothing and call it the result.
    reads = client.pipeline(transaction=True)
    reads.hmget(keys.job(job_id), "kind", "spec", "state", "units_done", "units_total", "audits_pending")
    reads.hgetall(keys.job_parts(job_id))
    reads.hgetall(keys.job_chunks(job_id))
    (kind, spec_json, state, done, total, pending), parts, chunks = reads.execute()
    if state is None or JobState(state).is_final or done != total or int(pending or 0) > 0:
        return False  # not every unit is in, or not every result in it was audited yet (trust/audits.py)
    params = json.loads(spec_json)["params"]
    try:
        final = handler(JobKind(kind)).finalize(params, parts, chunks)
    except HydraError as exc:
        return store.fail_job(client, job_id, f"could not finalize: {exc}", now=now, detail_s=detail_s)
    # The blobs are staged under keys of this call's own and renamed into place by FINISH, only if
    # this call ends the job: a finalizer that lost a race (or was computing from a result since
    # revoked) never overwrites the result. Staged blobs left by a crash expire.
    blob_keys = {"image": keys.job_image(job_id), "counts": keys.job_counts(job_id)}
    token = secrets.token_hex(8)
    staged = {blob_keys[name]: keys.staged(blob_keys[name], token) for name in final.blobs}
    if staged:
        pipe = client.pipeline(transaction=False)
        for name, blob in final.blobs.items():
            pipe.set(staged[blob_keys[name]], blob, ex=STAGED_TTL_S)
        pipe.execute()
    return scripts(client).finish(job_id, JobState.DONE.value, now=now, units_done=done,
                                  fields={"result": json.dumps(final.result)}, blobs=staged, detail_s=detail_s)
