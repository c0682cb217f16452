"""The Lua scripts Hydra runs in Redis, and the Python side of each.

Each script is one atomic step of a chunk's life, in its own ``.lua`` file beside this module:
*grant* a lease to one worker, *backup* a straggler, *merge* a result exactly once (minting its
reward in the same step), *requeue* a chunk whose lease expired or whose result was refused, and
*finish* a job, releasing its leases; *revoke* a result of a worker caught cheating and *reopen* a
finished job that held one (trust/consequences.py); plus the ledger's *mint* and *transfer*, a worker's
*grid_info* report, and *bind_key*, a volunteer's first registration (trust/volunteers.py).
Files named ``_*.lua`` are libraries that a script pulls in with a ``-- uses: _name`` line.
Every file names its inputs at the top (``local job = KEYS[1]``).

**Replicated ledger writes** (``HYDRA_REDIS_WAIT_REPLICAS`` > 0, a Sentinel deployment): after a
merge that minted, a mint, a transfer (or its idempotent repeat) and a reversal, the method waits
until that many replicas hold the write (:func:`hydra_tasks.redis_conn.confirm_replicated`). If fewer
confirm in time the write stays applied on the primary; ``mint`` and ``transfer`` then raise
``ReplicationShort`` (the caller is told, and a retry is idempotent: mint key, nonce), while
``merge`` and ``revoke`` log a warning and go on (no one outside was told anything; if the primary
is lost before the write reached a replica, the chunk's lease expires on the new primary and the
chunk is recomputed and minted there once, see ARCHITECTURE.md "High availability").

Every key a script touches is passed in ``KEYS``; none is built inside Lua. Where a key depends
on data in Redis (the in-flight set of a lease's holder, the lease of the chunk a job hands out
next), the caller reads that data first and passes it along, and the script checks that it still
holds; if it does not, the script changes nothing and says so (``STALE``, ``MOVED``), and the
methods here read again. Return codes are the enums below.
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import re
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import redis

from .. import keys
from ..settings import JOB_DETAIL_S_DEFAULT
from ..errors import HydraError
from ..models import JobState
from ..redis_conn import ReplicationShort, confirm_replicated

log = logging.getLogger(__name__)

_DIR = Path(__file__).resolve().parent
_USES = re.compile(r"^-- uses: (.+)$", re.MULTILINE)
#: How often a call re-reads and tries again when another control process changed what it read.
MAX_ATTEMPTS = 20

LEDGER_KEYS = [keys.LEDGER_ACCOUNTS, keys.LEDGER_BALANCES, keys.LEDGER_EARNED, keys.LEDGER_STATS, keys.LEDGER_MINTED,
               keys.LEDGER_DAILY, keys.LEDGER_JOURNAL, keys.LEDGER_HEAD, keys.LEDGER_RANK_BALANCE,
               keys.LEDGER_RANK_EARNED, keys.PROFILE_TEAMS, keys.TEAMS_EARNED]  # the order _mint.lua's ledger_keys() expects


@functools.cache
def source(name: str) -> str:
    """The text of ``<name>.lua``, after the libraries its ``-- uses:`` lines name (read once)."""
    text = (_DIR / f"{name}.lua").read_text()
    libraries = [lib.strip() for line in _USES.findall(text) for lib in line.split(",")]
    return "".join(source(lib) + "\n" for lib in libraries) + text


class GrantCode(enum.IntEnum):
    LEASED = 1
    FULL = 0      # the worker's window is full
    EMPTY = -1    # the job has nothing to hand out now (or is over)
    MOVED = 2     # internal: the job's next chunk changed between the peek and the grant
    NOT_ELIGIBLE = 3  # an audit chunk this worker may not take (it audits the worker's own result, or the
                      # worker has too few clean audits to audit others)


class MergeCode(enum.IntEnum):
    MERGED = 1
    DUPLICATE = 0
    JOB_OVER = -1
    NOT_SENT = -2  # the chunk was never sent to the worker that returned it
    STALE = -3     # internal: the lease's holders changed since they were read


class RequeueCode(enum.IntEnum):
    REQUEUED = 1
    NOT_TAKEN = -1  # no such lease, not expired (sweep), or not the reporter's (forced)
    OVER = -2       # the chunk was merged meanwhile, or the job is over: the lease is dropped
    STALE = -3      # internal


class RevokeCode(enum.IntEnum):
    RECOMPUTE = 1      # taken out of its live job and queued again
    FLAGGED = 2        # its job had finished: the chunk is flagged suspect in it
    NOTHING_MORE = 0   # its job failed, was cancelled or deleted, or it is a kept preview: tokens only
    STALE = -3         # internal


@dataclass(frozen=True)
class Revoke:
    code: RevokeCode
    reversed_micro: int = 0


class GridInfoCode(enum.IntEnum):
    STORED = 1
    REPLAY = 0
    KEY_CHANGED = -1


class TransferCode(enum.IntEnum):
    DONE = 1
    REPEATED = 2
    UNKNOWN_SENDER = -1
    UNKNOWN_RECIPIENT = -2
    STALE_NONCE = -3
    OVERDRAFT = -4


class BindCode(enum.IntEnum):
    BOUND = 1
    ALREADY_BOUND = 2       # the same key again: an idempotent re-registration
    UNKNOWN = -1
    REVOKED = -2
    OTHER_KEY = -3          # the volunteer is bound to another key
    BAD_SECRET = -4         # wrong join secret, or it was used already
    KEY_TAKEN = -5          # the key is bound to another volunteer


class ScriptContention(HydraError):
    """A script kept finding its inputs changed by other control processes."""


@dataclass(frozen=True)
class Grant:
    """The outcome of one GRANT. ``after``: what a peek at the job would read now, when this grant cut a
    new range (the caller's next grant of the job may skip its own peek)."""

    code: GrantCode
    chunk_id: str | None = None
    attempt: int = 0
    spec_json: str | None = None
    after: "Peek | None" = None


@dataclass(frozen=True)
class Peek:
    """What GRANT's caller reads before it: the head of the job's todo list, its heaviest and lightest
    waiting tiles, and its state, cursor, units_total and chunks_total (as text, as read)."""

    head: str | None
    heaviest: str | None
    lightest: str | None
    state: str | None
    cursor: str | None
    units_total: str | None
    chunks_total: str | None

    @staticmethod
    def queue(pipe: redis.client.Pipeline, job_id: str) -> None:
        """Queue the reads of a peek on ``pipe``; :meth:`parse` takes their four replies, in order."""
        pipe.lindex(keys.job_todo(job_id), 0)
        pipe.zrange(keys.job_tiles(job_id), 0, 0, desc=True)
        pipe.zrange(keys.job_tiles(job_id), 0, 0)
        pipe.hmget(keys.job(job_id), "state", "cursor", "units_total", "chunks_total")

    @classmethod
    def parse(cls, replies: Sequence[Any]) -> "Peek":
        head, heaviest, lightest, (state, cursor, units_total, chunks_total) = replies
        return cls(head, heaviest[0] if heaviest else None, lightest[0] if lightest else None, state, cursor,
                   units_total, chunks_total)


@dataclass(frozen=True)
class Requeue:
    """The outcome of one REQUEUE: ``count`` is the lease's new value of the counter when
    ``code`` is REQUEUED; ``worker`` held the lease."""

    code: RequeueCode
    count: int = 0
    worker: str | None = None


@dataclass(frozen=True)
class Holders:
    """Who a lease names: its holder and its backup ('' for none)."""

    holder: str = ""
    backup: str = ""

    @classmethod
    def of(cls, worker: str | None, backup: str | None) -> "Holders":
        return cls(worker or "", backup or "")

    def inflight_keys(self) -> list[str]:
        return [keys.worker_inflight(w) for w in (self.holder, self.backup) if w]


class Deferred:
    """Writes MERGE applies only if the chunk merges, in the same atomic step (the speed model, the
    carbon totals, the dashboard's history): it has the few pipeline methods those modules queue on
    (``hset``, ``hincrby``, ``hincrbyfloat``, ``expireat``), and records them for merge.lua."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.ops: list[list[Any]] = []

    def _key(self, key: str) -> int:
        if key not in self.keys:
            self.keys.append(key)
        return self.keys.index(key) + 1

    def hset(self, key: str, field: str | None = None, value: Any = None,
             mapping: Mapping[str, Any] | None = None) -> None:
        for name, v in ([(field, value)] if field is not None else []) + list((mapping or {}).items()):
            self.ops.append(["HSET", self._key(key), name, str(v)])

    def hincrby(self, key: str, field: str, amount: int = 1) -> None:
        self.ops.append(["HINCRBY", self._key(key), field, str(int(amount))])

    def hincrbyfloat(self, key: str, field: str, amount: float) -> None:
        self.ops.append(["HINCRBYFLOAT", self._key(key), field, repr(float(amount))])

    def expireat(self, key: str, when: int | float) -> None:
        self.ops.append(["EXPIREAT", self._key(key), str(int(when))])

    def to_json(self) -> str:
        return json.dumps(self.ops) if self.ops else ""


def undo_fields(units: int, increments: Mapping[str, int], keep: bool, spec_json: str) -> str:
    """What MERGE adds to a result's entry in its worker's results log, so that a catch can undo the
    result after its job's working state (chunk specs, parts, done set) was compacted away: the
    chunk's units, the counters it added, whether it is in no output (a preview, an audit), and its
    spec (to recompute it if the job is re-opened). JSON object members, without the braces."""
    body = json.dumps({"units": units, "inc": dict(increments), "keep": keep, "spec": spec_json},
                      separators=(",", ":"))
    return body[1:-1]


#: cut(chunk_id, start, count) -> the spec JSON of a new range chunk, for kinds cut lazily.
Cut = Callable[[str, int, int], str]


def read_holders(client: redis.Redis, job_id: str, chunk_id: str) -> Holders:
    return Holders.of(*client.hmget(keys.lease(job_id, chunk_id), "worker", "backup"))


class Rider(Protocol):
    """Reads that ride on a script's round trip, sent right after it (e.g. scheduling.dispatcher.Prefetch)."""

    @property
    def size(self) -> int: ...

    def queue(self, pipe: redis.client.Pipeline) -> None: ...

    def take(self, replies: list[Any]) -> None: ...


def _run_last(pipe: redis.client.Pipeline, script: "redis.commands.core.Script", *, keys: Sequence[Any],
              args: Sequence[Any], rider: Rider | None = None) -> Any:
    """Send ``script`` as the last command of the non-transactional ``pipe`` and return its reply;
    ``rider``'s reads follow it in the same round trip, so they see what the script did.

    By EVALSHA alone: a script registered on a pipeline makes redis-py ask SCRIPT EXISTS first, one
    more round trip per call. If the server does not know the script (a restart, a failover to a
    replica that never ran it), the commands before it have run already and stay done; only the
    script is sent again, through ``script`` itself, which loads it; the rider's reads, made before it
    ran, are dropped (their owner reads again)."""
    pipe.evalsha(script.sha, len(keys), *keys, *args)
    if rider is not None:
        rider.queue(pipe)
    replies = pipe.execute(raise_on_error=False)
    extra = rider.size if rider is not None else 0
    ours, theirs = replies[:len(replies) - extra], replies[len(replies) - extra:]
    for reply in ours[:-1]:
        if isinstance(reply, Exception):
            raise reply
    last = ours[-1]
    if isinstance(last, redis.exceptions.NoScriptError):
        last = script(keys=list(keys), args=list(args))
        theirs = []  # read before the script ran: stale
    elif isinstance(last, Exception):
        raise last
    if rider is not None and theirs and not any(isinstance(r, Exception) for r in theirs):
        rider.take(theirs)
    return last


class Scripts:
    """The scripts registered on one Redis client (EVALSHA, reloaded automatically)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        register = client.register_script
        self._grant, self._backup = register(source("grant")), register(source("backup"))
        self._merge, self._requeue = register(source("merge")), register(source("requeue"))
        self._finish, self._mint = register(source("finish")), register(source("mint"))
        self._transfer, self._grid_info = register(source("transfer")), register(source("grid_info"))
        self._bind_key = register(source("bind_key"))
        self._revoke, self._reopen = register(source("revoke")), register(source("reopen"))
        self._team = register(source("team"))
        self._beat = register(source("beat"))

    # --- leases ----------------------------------------------------------------------------
    def grant(self, job_id: str, worker_id: str, region: str, *, capacity: int, now: float, lease_s: float,
              rate: float, cut: Cut | None = None, cut_units: int = 0, order: str = "max",
              peek: Peek | None = None) -> Grant:
        """Lease the job's next chunk to ``worker_id``: a re-queued chunk first, then the heaviest
        (``order="max"``) or lightest waiting tile, else a new range of ``cut_units`` units built by
        ``cut`` (kinds cut lazily). The lease lasts 3x the chunk's work at ``rate``, at least ``lease_s``.
        ``peek``: the job as the caller read it (a round trip saved); if it is stale, GRANT changes
        nothing and answers MOVED, and this reads the job again."""
        extra = [keys.AUDITS, keys.job_audits(job_id)]
        for _ in range(MAX_ATTEMPTS):
            hinted = peek is not None
            if peek is None:
                reads = self.client.pipeline(transaction=False)
                Peek.queue(reads, job_id)
                peek = Peek.parse(reads.execute())
            head, state, cursor, units_total, chunks_total = (peek.head, peek.state, peek.cursor, peek.units_total,
                                                               peek.chunks_total)
            top = peek.heaviest if order == "max" else peek.lightest
            seen, peek = peek, None
            if hinted and (state is None or JobState(state).is_final or (
                    head is None and not top and int(cursor or 0) >= int(units_total or 0))):
                continue  # the hint says there is nothing: make sure with a read of our own
            if state is None or JobState(state).is_final:
                return Grant(GrantCode.EMPTY)
            cut_args: list[Any] = ["", "", 0, ""]
            count = 0
            if head is not None:
                source_name, chunk_id = "todo", head
            elif top:
                source_name, chunk_id = "tile", top
            else:
                start, total = int(cursor or 0), int(units_total or 0)
                if cut is None or cut_units <= 0 or start >= total:
                    return Grant(GrantCode.EMPTY)
                count = min(cut_units, total - start)
                source_name, chunk_id = "cut", f"c{int(chunks_total or 0):06d}"
                cut_args = [cursor or "0", chunks_total or "0", count, cut(chunk_id, start, count)]
            member = keys.lease_member(job_id, chunk_id)
            res = self._grant(
                keys=[keys.job(job_id), keys.job_todo(job_id), keys.job_tiles(job_id), keys.job_chunks(job_id),
                      keys.LEASES, keys.lease(job_id, chunk_id), keys.worker_inflight(worker_id),
                      keys.worker(worker_id), *extra, keys.job_leases(job_id)],
                args=[source_name, chunk_id, member, worker_id, region, repr(now), capacity, repr(lease_s),
                      repr(rate), order, *cut_args, 0],
            )
            code = GrantCode(int(res[0]))
            if code is GrantCode.LEASED:
                after = None
                if source_name == "cut":  # the job moved on by exactly this cut
                    after = replace(seen, state=JobState.RUNNING.value, cursor=str(int(cursor or 0) + count),
                                    chunks_total=str(int(chunks_total or 0) + 1))
                return Grant(code, chunk_id, int(res[1]), _text(res[2]), after)
            if code is not GrantCode.MOVED:
                return Grant(code)
        raise ScriptContention(f"could not grant a chunk of job {job_id} after {MAX_ATTEMPTS} attempts")

    def grant_audit(self, job_id: str, chunk_id: str, worker_id: str, region: str, *, capacity: int, now: float,
                    lease_s: float, auditor_min: int) -> Grant:
        """Lease the audit chunk ``chunk_id`` (waiting in ``hydra:audits``) to ``worker_id``, if it may
        audit it (trust/audits.py): LEASED, FULL, EMPTY (the job is over), MOVED (taken meanwhile) or
        NOT_ELIGIBLE."""
        res = self._grant(
            keys=[keys.job(job_id), keys.job_todo(job_id), keys.job_tiles(job_id), keys.job_chunks(job_id),
                  keys.LEASES, keys.lease(job_id, chunk_id), keys.worker_inflight(worker_id), keys.worker(worker_id),
                  keys.AUDITS, keys.job_audits(job_id), keys.job_leases(job_id)],
            args=["audit", chunk_id, keys.lease_member(job_id, chunk_id), worker_id, region, repr(now), capacity,
                  repr(lease_s), "1", "max", "", "", 0, "", auditor_min],
        )
        code = GrantCode(int(res[0]))
        return Grant(code, chunk_id, int(res[1]), _text(res[2])) if code is GrantCode.LEASED else Grant(code)

    def backup(self, job_id: str, chunk_id: str, worker_id: str, *, capacity: int) -> str | None:
        """Lease a second copy of an in-flight chunk to ``worker_id``; returns its spec JSON, or None."""
        res = self._backup(
            keys=[keys.LEASES, keys.worker_inflight(worker_id), keys.job(job_id), keys.job_chunks(job_id),
                  keys.lease(job_id, chunk_id)],
            args=[keys.lease_member(job_id, chunk_id), worker_id, capacity, chunk_id],
        )
        return _text(res) if res else None

    def merge(self, job_id: str, chunk_id: str, worker_id: str, part_json: str, *, now: float, elapsed_ms: int,
              units: int, increments: Mapping[str, int], mint_json: str = "",
              holders: Holders | None = None, log_entry: str = "", undo: str = "",
              deferred: Deferred | None = None,
              before: Callable[[redis.client.Pipeline], None] | None = None,
              rider: Rider | None = None) -> tuple[MergeCode, int, int, bool]:
        """Merge once, minting ``mint_json`` (the reward) in the same step, and log it in the worker's
        results log (what a catch revokes; ``undo``: :func:`undo_fields`) and ``log_entry`` in the job's
        chunk log; ``deferred``: writes applied only if it merges. Returns (code, units_done, units_total,
        minted). ``holders``: the lease's holders if the caller read them. ``before``: writes queued on
        the pipeline that sends the script, so they cost no round trip (and no fsync) of their own; ``rider``:
        reads sent right after the script, in its round trip (their replies only if it ran)."""
        flat: list[Any] = [x for pair in sorted(increments.items()) for x in pair]
        extra_keys, ops = (deferred.keys, deferred.to_json()) if deferred is not None else ([], "")
        for _ in range(MAX_ATTEMPTS):
            holders = holders or read_holders(self.client, job_id, chunk_id)
            pipe = self.client.pipeline(transaction=False)
            if before is not None:
                before(pipe)
                before = None  # once, even if the script must be sent again
            res = _run_last(pipe, self._merge,
                            keys=[keys.job(job_id), keys.job_done(job_id), keys.job_parts(job_id),
                                  keys.job_workers(job_id), keys.job_todo(job_id), keys.LEASES, keys.worker(worker_id),
                                  keys.lease(job_id, chunk_id), keys.worker_results(worker_id), *LEDGER_KEYS,
                                  keys.job_leases(job_id), keys.job_log(job_id), *holders.inflight_keys(),
                                  *extra_keys],
                            args=[chunk_id, part_json, worker_id, keys.lease_member(job_id, chunk_id), repr(now),
                                  elapsed_ms, units, mint_json, holders.holder, holders.backup, job_id,
                                  keys.WORKER_RESULTS_KEPT, log_entry, keys.JOB_LOG_KEPT, undo, ops, *flat],
                            rider=rider)
            code = MergeCode(int(res[0]))
            if code is not MergeCode.STALE:
                minted = bool(int(res[3] or 0))
                if code is MergeCode.MERGED:
                    self._confirm_or_warn(f"the merge of chunk {chunk_id} of job {job_id}")
                return code, int(res[1] or 0), int(res[2] or 0), minted
            holders = None
        raise ScriptContention(f"could not merge chunk {chunk_id} of job {job_id} after {MAX_ATTEMPTS} attempts")

    def requeue(self, job_id: str, chunk_id: str, *, now: float, counter: str, force: bool, reporter: str = "",
                holders: Holders | None = None) -> Requeue:
        """Take a chunk back from its lease and put it first in the job's queue. Without ``force``
        only an expired lease; with it only a live one, reported by its holder or backup."""
        for _ in range(MAX_ATTEMPTS):
            holders = holders or read_holders(self.client, job_id, chunk_id)
            audit = keys.is_audit_chunk(chunk_id)  # audit chunks wait in the audits zset (trust/audits.py)
            res = self._requeue(
                keys=[keys.LEASES, keys.AUDITS if audit else keys.job_todo(job_id), keys.job(job_id),
                      keys.job_done(job_id), keys.lease(job_id, chunk_id), keys.job_leases(job_id),
                      *holders.inflight_keys()],
                args=[keys.lease_member(job_id, chunk_id), chunk_id, repr(now), counter, "1" if force else "0",
                      reporter, holders.holder, holders.backup, "1" if audit else "0"],
            )
            n = int(res[0])
            worker = _text(res[1]) if len(res) > 1 and res[1] else None
            if n >= 1:
                return Requeue(RequeueCode.REQUEUED, n, worker)
            if n != RequeueCode.STALE:
                return Requeue(RequeueCode(n), 0, worker)
            holders = None
        raise ScriptContention(f"could not re-queue chunk {chunk_id} of job {job_id} after {MAX_ATTEMPTS} attempts")

    def finish(self, job_id: str, state: str, *, now: float, fields: Mapping[str, str],
               units_done: str | None = None, blobs: Mapping[str, str] | None = None,
               drop: Sequence[str] = (), detail_s: float = JOB_DETAIL_S_DEFAULT) -> bool:
        """Move a live job to a final state exactly once and release its leases. True if this call did.
        ``units_done``: the count the caller's final result was computed at; False if it changed (a
        result was revoked meanwhile). ``blobs``: {job's key: staging key} of result blobs written
        beforehand; renamed into place if this call ends the job, deleted if the job was over or
        ``units_done`` changed (False is returned too if a staging key is gone). ``drop``: keys
        deleted if this call ends the job. The job's working state is compacted in the same step (see
        finish.lua); its chunk log expires ``detail_s`` later (HYDRA_JOB_DETAIL_S)."""
        from ..jobs.view import COUNTERS  # read as 0 when absent: a finished job's zero counters are dropped

        staged = [k for final, staging in (blobs or {}).items() for k in (staging, final)]
        for _ in range(MAX_ATTEMPTS):
            reads = self.client.pipeline(transaction=False)
            reads.hmget(keys.job(job_id), "state", "dispatched", "redispatched")
            reads.lrange(keys.job_todo(job_id), 0, -1)
            reads.zrange(keys.job_leases(job_id), 0, -1)
            (state_now, dispatched, redispatched), todo, leased = reads.execute()
            if state_now is None or JobState(state_now).is_final:
                if staged:  # another call ended the job: this one's staged blobs are not the result
                    self.client.delete(*staged[0::2])
                return False
            lease_reads = self.client.pipeline(transaction=False)
            for chunk_id in todo:  # only re-queued chunks have a lease hash
                lease_reads.exists(keys.lease(job_id, chunk_id))
            for chunk_id in leased:
                lease_reads.hmget(keys.lease(job_id, chunk_id), "worker", "backup")
            found = lease_reads.execute() if todo or leased else []
            waiting = [c for c, exists in zip(todo, found) if exists]
            holders = [Holders.of(*pair) for pair in found[len(todo):]]
            lease_keys = [keys.lease(job_id, c) for c in waiting]
            for chunk_id, h in zip(leased, holders):
                lease_keys += [keys.lease(job_id, chunk_id), *h.inflight_keys()]
            manifest = {"dispatched": dispatched or "0", "redispatched": redispatched or "0", "waiting": waiting,
                        "leased": [[c, h.holder, h.backup] for c, h in zip(leased, holders)],
                        "totals": list(keys.JOB_TOTAL_COUNTERS), "zeroes": list(COUNTERS)}
            if units_done is not None:
                manifest["units_done"] = units_done
            if staged:
                manifest["blobs"] = len(staged) // 2
            if drop:
                manifest["drop"] = len(drop)
            res = int(self._finish(
                keys=[keys.job(job_id), keys.JOBS_ACTIVE, keys.job_todo(job_id), keys.LEASES,
                      keys.job_tiles(job_id), keys.job_leases(job_id), keys.JOBS_TOTALS, keys.job_chunks(job_id),
                      keys.job_done(job_id), keys.job_parts(job_id), keys.job_log(job_id), keys.job_audits(job_id),
                      keys.AUDITS, keys.LEDGER_MINTED, keys.LEDGER_STATS, keys.JOBS_FINISHED, *lease_keys, *staged,
                      *drop],
                args=[state, repr(now), json.dumps(dict(fields)), job_id, json.dumps(manifest), repr(detail_s)],
            ))
            if res != -3:
                return res == 1
        raise ScriptContention(f"could not finish job {job_id} after {MAX_ATTEMPTS} attempts")

    # --- consequences of a catch (trust/consequences.py) -------------------------------------
    def revoke(self, worker_id: str, entry: str, *, job_id: str, now: float, reason: str, part_sha1: str,
               units: int, keep: bool, increments: Mapping[str, int], spec_json: str = "") -> Revoke:
        """Undo the oldest result in the worker's results log, ``entry`` as read (see revoke.lua);
        ``spec_json``: the chunk's spec, kept in the suspect flags for a re-open."""
        flat: list[Any] = [x for pair in sorted(increments.items()) for x in pair]
        chunk_id = json.loads(entry)["chunk"]
        res = self._revoke(
            keys=[keys.worker_results(worker_id), keys.job(job_id), keys.job_done(job_id), keys.job_parts(job_id),
                  keys.job_workers(job_id), keys.job_todo(job_id), keys.lease(job_id, chunk_id),
                  keys.job_suspect(job_id), keys.LEDGER_MINTED, keys.LEDGER_BALANCES, keys.LEDGER_EARNED,
                  keys.LEDGER_STATS, keys.LEDGER_JOURNAL, keys.LEDGER_HEAD, keys.LEDGER_RANK_BALANCE,
                  keys.LEDGER_RANK_EARNED, keys.PROFILE_TEAMS, keys.TEAMS_EARNED],
            args=[entry, worker_id, repr(now), reason[:300], part_sha1, units, "1" if keep else "0", job_id,
                  spec_json, *flat],
        )
        outcome = Revoke(RevokeCode(int(res[0])), int(res[1] or 0))
        if outcome.code is not RevokeCode.STALE:
            self._confirm_or_warn(f"the reversal of {worker_id}'s result for chunk {chunk_id} of job {job_id}")
        return outcome

    def reopen(self, job_id: str, *, now: float, score: float, restored: Mapping[str, str],
               suspect: Mapping[str, str], specs: Mapping[str, str] | None = None) -> int:
        """Re-open a finished job with suspect results (see reopen.lua): 1, 0 or -3 (STALE). ``restored``:
        parts to put back; ``specs``: chunk specs to put back (a compacted job's)."""
        chunks = sorted(suspect)
        return int(self._reopen(
            keys=[keys.job(job_id), keys.JOBS_ACTIVE, keys.job_done(job_id), keys.job_parts(job_id),
                  keys.job_workers(job_id), keys.job_todo(job_id), keys.job_suspect(job_id), keys.job_image(job_id),
                  keys.job_counts(job_id), keys.JOBS_TOTALS, keys.job_chunks(job_id), keys.JOBS_FINISHED,
                  *[keys.lease(job_id, c) for c in chunks]],
            args=[repr(now), job_id, repr(score), json.dumps(dict(restored)),
                  json.dumps([[c, suspect[c]] for c in chunks]), json.dumps(list(keys.JOB_TOTAL_COUNTERS)),
                  json.dumps(dict(specs or {}))],
        ))

    # --- workers and the ledger --------------------------------------------------------------
    def beat(self, worker_id: str, *, now: float, state: str, pause_reason: str) -> bool:
        """A known worker's heartbeat; False (nothing written) if it is offline by now (beat.lua)."""
        return bool(int(self._beat(keys=[keys.worker(worker_id)], args=[repr(now), state, pause_reason])))

    def grid_info(self, worker_id: str, public_key: str, zone: str, share: float, timestamp: float) -> GridInfoCode:
        return GridInfoCode(int(self._grid_info(keys=[keys.worker(worker_id), keys.WORKERS_GEN],
                                                args=[public_key, zone, repr(share), repr(timestamp),
                                                      keys.new_generation()])))

    def bind_key(self, name: str, secret_sha256: str, public_key: str, *, now: float) -> BindCode:
        """Bind a volunteer's key on its first registration (see bind_key.lua)."""
        return BindCode(int(self._bind_key(keys=[keys.volunteer(name), keys.VOLUNTEER_KEYS],
                                           args=[name, secret_sha256, public_key, repr(now)])))

    def set_team(self, account: str, team: str, *, pipe: redis.client.Pipeline) -> None:
        """Queue on ``pipe`` (a MULTI) the move of ``account`` to ``team`` ('' for none), carrying its
        earned total between the teams' totals (see team.lua)."""
        self._team(keys=[keys.PROFILE_TEAMS, keys.TEAMS_EARNED, keys.TEAMS_MEMBERS, keys.LEDGER_EARNED],
                   args=[account, team], client=pipe)

    def mint(self, mint_json: str) -> bool:
        """Mint once per idempotency key (see mint.lua). True if minted now, False if already minted."""
        minted = bool(int(self._mint(keys=LEDGER_KEYS, args=[mint_json])))
        confirm_replicated(self.client, "The mint")  # a repeat too: the first one may not be replicated yet
        return minted

    def transfer(self, sender: str, recipient: str, amount: int, nonce: int, signature: str, *, now: float,
                 reason: str) -> tuple[TransferCode, str]:
        """Move ``amount`` micro-tokens; returns (code, journal entry id or detail)."""
        res = self._transfer(keys=[keys.LEDGER_ACCOUNTS, keys.LEDGER_BALANCES, keys.LEDGER_NONCES,
                                   keys.LEDGER_TRANSFERS, keys.LEDGER_STATS, keys.LEDGER_JOURNAL, keys.LEDGER_HEAD,
                                   keys.LEDGER_RANK_BALANCE],
                             args=[sender, recipient, str(amount), str(nonce), signature, repr(now), reason])
        code = TransferCode(int(res[0]))
        if code in (TransferCode.DONE, TransferCode.REPEATED):  # a repeat: the first may not be replicated yet
            confirm_replicated(self.client, "The transfer")
        return code, _text(res[1])

    def _confirm_or_warn(self, what: str) -> None:
        try:
            confirm_replicated(self.client, what)
        except ReplicationShort as exc:
            log.warning("%s", exc)


_registered: "weakref.WeakKeyDictionary[redis.Redis, Scripts]" = weakref.WeakKeyDictionary()


def scripts(client: redis.Redis) -> Scripts:
    """The scripts registered on ``client`` (once per client)."""
    found = _registered.get(client)
    if found is None:
        found = _registered[client] = Scripts(client)
    return found


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


__all__: Sequence[str] = [
    "BindCode", "Revoke", "RevokeCode", "Grant", "GrantCode", "Holders", "MergeCode", "Requeue", "RequeueCode", "GridInfoCode",
    "TransferCode", "Cut", "Scripts", "ScriptContention", "scripts", "source", "read_holders", "LEDGER_KEYS", "MAX_ATTEMPTS",
    "Deferred", "Peek", "undo_fields",
]
