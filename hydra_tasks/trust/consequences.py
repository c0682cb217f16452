"""What follows a catch (issue 12, item 3): a worker whose result failed a spot check is quarantined
(:mod:`.reputation`), and everything it returned before is revoked.

A passed spot check proves the blocks or pixels it recomputed, not the rest of the result: a worker
that fabricates one π block in 64 passes most checks. So once a worker is caught, none of its
earlier results is trusted. Its *results log* (``hydra:worker:{id}:results``, appended by MERGE)
holds every result merged since it was admitted or its quarantine was last lifted (its newest
``keys.WORKER_RESULTS_KEPT``), and :func:`punish` revokes each one (lua/revoke.lua), oldest first:

* the tokens minted for it are taken back by a ``reversal`` entry in the journal, with the reason
  (``hydra ledger verify`` replays reversals); the mint key is freed, so whoever recomputes the
  chunk is paid for it. A balance already spent goes negative: the account owes it, and can send no
  transfer until it is repaid;
* in a job still running, the result is taken out (done set, part, counters) and the chunk queued
  again, so another worker recomputes it: no final result contains a value from a caught worker;
* in a finished job, the chunk is flagged suspect (the job's ``suspect`` count, shown by the API
  and the dashboard); ``hydra jobs reopen JOB`` (or ``POST /api/jobs/<id>/reopen``) recomputes them
  (:func:`hydra_tasks.jobs.store.reopen_job`);
* an adaptive Mandelbrot preview only guides tiling and is in no output: it loses its tokens only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field

import redis

from .. import keys
from ..errors import HydraError
from ..jobs import handler
from ..lua import MAX_ATTEMPTS, RevokeCode, ScriptContention, scripts
from ..models import ChunkSpec, JobState
from ..settings import Settings
from . import reputation

log = logging.getLogger(__name__)


@dataclass
class Punishment:
    """What :func:`punish` revoked."""

    recomputed: int = 0                                   # results taken out of live jobs, queued again
    flagged: dict[str, int] = field(default_factory=dict)  # finished job id -> results flagged suspect in it
    tokens_only: int = 0                                  # results in failed, cancelled or deleted jobs, previews
    reversed_micro: int = 0                               # micro-tokens taken back

    def to_json(self) -> dict[str, object]:
        return {"recomputed": self.recomputed, "flagged": dict(self.flagged), "tokens_only": self.tokens_only,
                "reversed_micro": self.reversed_micro}


def catch(client: redis.Redis, settings: Settings, worker_id: str, reason: str, *,
          now: float | None = None) -> Punishment:
    """A check proved ``worker_id`` wrong: quarantine it, take back the chunks it holds, and revoke
    its past results (:func:`punish`)."""
    from ..scheduling.sweeper import requeue_worker_leases

    now = time.time() if now is None else now
    reputation.caught(client, worker_id, reason, now=now)
    log.warning("QUARANTINED %s: %s", worker_id, reason)
    requeue_worker_leases(client, settings, worker_id, now=now)
    return punish(client, worker_id, reason, now=now)


def punish(client: redis.Redis, worker_id: str, reason: str, *, now: float | None = None) -> Punishment:
    """Revoke every result in the worker's results log (see the module docstring). Safe to run again
    or concurrently: each result is revoked once, atomically, as it leaves the log."""
    now = time.time() if now is None else now
    lua, done = scripts(client), Punishment()
    why = f"{worker_id} was caught cheating: {reason}"
    stale = 0
    while True:
        entry = client.lindex(keys.worker_results(worker_id), 0)
        if entry is None:
            break
        r = _revocation(client, entry)
        outcome = lua.revoke(worker_id, entry, job_id=r.job_id, now=now, reason=why, part_sha1=r.part_sha1,
                             units=r.units, keep=r.keep, increments=r.increments, spec_json=r.spec_json)
        if outcome.code is RevokeCode.STALE:
            stale += 1
            if stale >= MAX_ATTEMPTS:
                raise ScriptContention(f"could not revoke the results of {worker_id}: they keep changing")
            continue
        stale = 0
        done.reversed_micro += outcome.reversed_micro
        if outcome.code is RevokeCode.RECOMPUTE:
            done.recomputed += 1
        elif outcome.code is RevokeCode.FLAGGED:
            job_id = json.loads(entry)["job"]
            done.flagged[job_id] = done.flagged.get(job_id, 0) + 1
        else:
            done.tokens_only += 1
    log.warning("revoked the results of %s: %d recomputed, %d flagged in %d finished job(s), %d micro-tokens "
                "reversed", worker_id, done.recomputed, sum(done.flagged.values()), len(done.flagged),
                done.reversed_micro)
    return done


@dataclass
class _Revocation:
    job_id: str
    part_sha1: str = ""
    units: int = 0
    keep: bool = False
    increments: dict[str, int] = field(default_factory=dict)
    spec_json: str = ""


def _revocation(client: redis.Redis, entry: str) -> _Revocation:
    """What revoke.lua needs to know about the logged result: its job, units, whether it is a kept
    preview, the increments it added to its job (recomputed from its part with the kind's verify),
    and the part's SHA-1 (so the script can tell the part is still the one read)."""
    e = json.loads(entry)
    job_id, chunk_id = e["job"], e["chunk"]
    reads = client.pipeline(transaction=False)
    reads.hget(keys.job_chunks(job_id), chunk_id)
    reads.hget(keys.job_parts(job_id), chunk_id)
    reads.hmget(keys.job(job_id), "state", "spec")
    spec_json, part, (state, job_spec) = reads.execute()
    r = _Revocation(job_id)
    if state is None:
        return r  # the job is gone: tokens only
    if spec_json is None:  # a finished job's working state is compacted: what MERGE logged says what to undo
        if "spec" not in e:
            log.warning("cannot undo chunk %s of compacted job %s: its log entry predates compaction", chunk_id,
                        job_id)
            r.keep = True  # nothing to recompute it from: its tokens only
            return r
        r.units, r.keep, r.spec_json = int(e["units"]), bool(e["keep"]), str(e["spec"])
        r.increments = {k: int(v) for k, v in e["inc"].items()}
        return r
    r.spec_json = spec_json
    chunk = ChunkSpec.from_json(json.loads(spec_json))
    kind = handler(chunk.kind)
    # A preview or an audit chunk is in no output: it only loses its tokens.
    r.units, r.keep = chunk.units, bool(chunk.params.get("preview")) or keys.is_audit_chunk(chunk_id)
    if part is None and JobState(state) is JobState.DONE:  # finalize compacted the parts into the image
        params = json.loads(job_spec)["params"]
        blobs = {"counts": client.get(keys.job_counts(job_id))}
        try:
            part = kind.restore_parts(params, {chunk_id: spec_json}, blobs).get(chunk_id)
        except HydraError as exc:
            log.warning("cannot rebuild chunk %s of job %s to flag it: %s", chunk_id, job_id, exc)
    if part is not None and not r.keep:
        r.part_sha1 = hashlib.sha1(part.encode()).hexdigest()
        r.increments = kind.verify(chunk, json.loads(part))
    return r
