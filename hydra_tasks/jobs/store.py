"""Job records in Redis: create (atomically, with the chunks planned up front), read, list,
cancel, fail, delete, and re-open a finished job whose results include suspect ones. The job hash's fields are documented in :mod:`hydra_tasks.keys`; reads
return the typed :class:`~hydra_tasks.jobs.view.JobView`.
"""

from __future__ import annotations

import json
import secrets
import time

import redis

from .. import keys
from ..errors import JobNotFound, JobStateError
from ..lua import MAX_ATTEMPTS, ScriptContention, scripts
from ..redis_conn import confirm_or_warn
from ..settings import JOB_DETAIL_S_DEFAULT
from ..models import ChunkSpec, JobKind, JobSpec, JobState
from . import handler
from .view import COUNTERS, JobView




def new_job_id() -> str:
    return secrets.token_hex(8)


def _active_score(priority: int, created_at: float, deadline_ts: float | None = None) -> float:
    """Higher priority first; then earliest deadline first, where a job without a deadline is
    due when it was submitted (so those run first come, first served, and the time-shifting
    plan, which books in deadline order, and the dispatcher agree on who goes first)."""
    return (9 - priority) * 1e11 + (created_at if deadline_ts is None else deadline_ts)


def create_job(client: redis.Redis, spec: JobSpec, chunks: list[ChunkSpec], *, job_id: str,
               now: float | None = None) -> str:
    """Store the job and all its planned chunks in one MULTI/EXEC: all or nothing."""
    now = time.time() if now is None else now
    record = {
        "id": job_id, "kind": spec.kind.value, "spec": json.dumps(spec.to_json()), "state": JobState.QUEUED.value,
        "priority": spec.priority, "created_at": repr(now), "updated_at": repr(now),
        "chunks_total": len(chunks), "units_total": handler(spec.kind).units_total(spec.params), "cursor": 0,
        **{c: 0 for c in COUNTERS if c not in ("chunks_total", "units_total")},
    }
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.job(job_id), mapping=record)
    for start in range(0, len(chunks), 10_000):
        batch = chunks[start:start + 10_000]
        pipe.hset(keys.job_chunks(job_id), mapping={c.chunk_id: json.dumps(c.to_json()) for c in batch})
        pipe.rpush(keys.job_todo(job_id), *[c.chunk_id for c in batch])
    pipe.zadd(keys.JOBS, {job_id: now})
    pipe.zadd(keys.JOBS_ACTIVE, {job_id: _active_score(spec.priority, now, spec.deadline_ts)})
    if spec.deadline_ts is not None:
        pipe.zadd(keys.JOBS_DEADLINES, {job_id: spec.deadline_ts})
    pipe.execute()
    return job_id


def get_job(client: redis.Redis, job_id: str) -> JobView:
    """The job, with progress and per-worker work. Raises JobNotFound."""
    reads = client.pipeline(transaction=False)
    reads.hgetall(keys.job(job_id))
    reads.hgetall(keys.job_workers(job_id))
    raw, workers = reads.execute()
    if "state" not in raw:  # none, or the remnant of a write that raced the job's deletion (no spec, no state)
        raise JobNotFound(f"No job {job_id!r}; list jobs with `hydra status` or GET /api/jobs.")
    return JobView.from_hash(raw, workers)


def list_jobs(client: redis.Redis, *, limit: int = 50) -> list[JobView]:
    """The newest ``limit`` jobs, newest first (without per-worker work)."""
    ids = client.zrevrange(keys.JOBS, 0, max(limit, 1) - 1)
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hgetall(keys.job(job_id))
    return [JobView.from_hash(raw) for raw in pipe.execute() if raw]


def job_state(client: redis.Redis, job_id: str) -> JobState | None:
    state = client.hget(keys.job(job_id), "state")
    return JobState(state) if state else None


def cancel_job(client: redis.Redis, job_id: str, *, now: float | None = None,
               detail_s: float = JOB_DETAIL_S_DEFAULT) -> JobView:
    """Cancel a queued or running job: its queued chunks are dropped and its leases released."""
    if not scripts(client).finish(job_id, JobState.CANCELLED.value, now=now or time.time(), fields={},
                                  detail_s=detail_s):
        state = job_state(client, job_id)
        if state is None:
            raise JobNotFound(f"No job {job_id!r} to cancel.")
        raise JobStateError(f"Job {job_id} is already {state.value}; only queued or running jobs can be cancelled.")
    confirm_or_warn(client, f"Cancelling job {job_id}")
    return get_job(client, job_id)


def fail_job(client: redis.Redis, job_id: str, error: str, *, now: float | None = None,
             detail_s: float = JOB_DETAIL_S_DEFAULT) -> bool:
    return scripts(client).finish(job_id, JobState.FAILED.value, now=now or time.time(), fields={"error": error},
                                  detail_s=detail_s)


def reopen_job(client: redis.Redis, job_id: str, *, now: float | None = None) -> JobView:
    """Re-open a finished job whose results include suspect ones (from a worker caught cheating after
    they were merged; trust/consequences.py): those chunks are recomputed by other workers and the
    final result is computed again. Raises JobNotFound, or JobStateError if there is nothing to redo."""
    now = time.time() if now is None else now
    for _ in range(MAX_ATTEMPTS):
        reads = client.pipeline(transaction=False)
        reads.hgetall(keys.job(job_id))
        reads.hgetall(keys.job_suspect(job_id))
        reads.exists(keys.job_parts(job_id))
        reads.get(keys.job_counts(job_id))
        fields, suspect, has_parts, counts = reads.execute()
        state, spec_json, created_at = fields.get("state"), fields.get("spec"), fields.get("created_at")
        if state is None:
            raise JobNotFound(f"No job {job_id!r} to re-open; list jobs with `hydra status` or GET /api/jobs.")
        if state != JobState.DONE.value or not suspect:
            raise JobStateError(f"Job {job_id} is {state} with no suspect results; only a done job that holds "
                                "results from a worker caught cheating later can be re-opened.")
        spec = json.loads(spec_json)
        kind = handler(JobKind(spec["kind"]))
        restored: dict[str, str] = {}
        specs: dict[str, str] = {}
        if fields.get("compacted") == "1":  # no chunk specs or parts left: the kept work is one part
            flags = {c: json.loads(f) for c, f in suspect.items()}
            missing = sorted(c for c, f in flags.items() if not f.get("spec"))
            if missing:
                raise JobStateError(f"Job {job_id} cannot be re-opened: suspect chunk(s) {', '.join(missing[:5])} were "
                                    "flagged without the spec needed to recompute them.")
            specs = {c: str(f["spec"]) for c, f in flags.items()}
            for chunk_id, (kept_spec, kept_part) in kind.restore_kept(job_id, spec["params"], fields, flags,
                                                                      {"counts": counts}).items():
                specs[chunk_id], restored[chunk_id] = kept_spec, kept_part
        elif not has_parts:  # finalize compacted the parts into the job's blobs: rebuild the ones that stay
            kept = sorted(set(client.smembers(keys.job_done(job_id))) - set(suspect))
            kept_specs = dict(zip(kept, client.hmget(keys.job_chunks(job_id), kept))) if kept else {}
            restored = kind.restore_parts(spec["params"], {c: j for c, j in kept_specs.items() if j},
                                          {"counts": counts})
        code = scripts(client).reopen(job_id, now=now, score=_active_score(int(spec["priority"]), float(created_at),
                                                                           spec.get("deadline_ts")),
                                      restored=restored, suspect=suspect, specs=specs)
        if code == 1:
            return get_job(client, job_id)
        if code == 0:
            raise JobStateError(f"Job {job_id} has no suspect results any more, or is no longer done.")
    raise ScriptContention(f"could not re-open job {job_id} after {MAX_ATTEMPTS} attempts")


def drop_remnants(client: redis.Redis, job_id: str) -> None:
    """Remove what a merge's bookkeeping (worker model, chunk log, carbon, an audit request) wrote for a
    job deleted meanwhile; a job that exists (has a state) is left alone. See :func:`delete_job`."""
    _delete(client, job_id, remnant_only=True)


def delete_job(client: redis.Redis, job_id: str) -> None:
    """Remove a finished (done, failed or cancelled) job and every key of it; JobNotFound if there
    is none, JobStateError if it is still queued or running (cancel it first).

    Removed: the job's keys (:func:`keys.job_keys`), its entries in the job indexes and the audit
    queue, and any lease hash left for one of its chunks. Kept: the ledger (its mints' journal
    entries, and their idempotency keys in ``hydra:ledger:minted``) and the workers' results logs,
    so a catch still reverses what a cheater earned on it. A late result for a deleted job pays
    nothing: the collector finds no chunk and no job, and MERGE refuses a job with no live state.
    The check and the removal are one WATCH/MULTI transaction (a job re-opened meanwhile is kept).
    A remnant (keys without a state, written by a merge's bookkeeping after a delete) is removed too."""
    _delete(client, job_id, remnant_only=False)
    confirm_or_warn(client, f"Deleting job {job_id}")


def _delete(client: redis.Redis, job_id: str, *, remnant_only: bool) -> None:
    job_key = keys.job(job_id)
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(job_key)
                state = pipe.hget(job_key, "state")
                if remnant_only and state is not None:
                    return
                if state is None and not pipe.exists(*keys.job_keys(job_id)):
                    if remnant_only:
                        return
                    raise JobNotFound(f"No job {job_id!r} to delete; list jobs with `hydra status` or GET /api/jobs.")
                if state is not None and not JobState(state).is_final:
                    raise JobStateError(f"Job {job_id} is {state}; cancel it before deleting it "
                                        f"(`hydra cancel {job_id}` or POST /api/jobs/{job_id}/cancel).")
                chunk_ids = pipe.hkeys(keys.job_chunks(job_id))
                audits = [keys.lease_member(job_id, a) for a in pipe.hkeys(keys.job_audits(job_id))]
                pipe.multi()
                pipe.delete(*keys.job_keys(job_id))
                if state is not None:  # the metrics' count of held jobs in that state (the counter sums stay)
                    pipe.hincrby(keys.JOBS_TOTALS, state, -1)
                for start in range(0, len(chunk_ids), 1000):  # a finished job should hold no lease; make sure
                    pipe.delete(*(keys.lease(job_id, c) for c in chunk_ids[start:start + 1000]))
                for index in (keys.JOBS, keys.JOBS_ACTIVE, keys.JOBS_DEADLINES, keys.JOBS_FINISHED):
                    pipe.zrem(index, job_id)
                if audits:
                    pipe.zrem(keys.AUDITS, *audits)
                pipe.execute()
                return
            except redis.WatchError:
                continue
