"""The worker registry in Redis: who is out there, where, how fast, and whether alive.

Volunteers write their own record (register + heartbeat); the control plane reads it to
build a cluster snapshot, marks silent workers offline and, ``HYDRA_WORKER_RETENTION_S`` after
their last heartbeat, prunes them (:func:`prune_offline`: the record and the worker's own queue go;
its token account, its journal entries, its results log, which a later catch revokes, and an enrolled
volunteer's credentials stay, and so does the binding of its id to its key). A pruned worker that
comes back simply registers again.
"""

from __future__ import annotations

import time
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import redis

from .. import keys
from ..compute import GENERATORS
from ..errors import IdentityError
from ..models import JobKind, WorkerState
from ..trust import reputation
from ..settings import Settings
from .performance import Performance, performance, reliability


#: What a worker that says nothing about generators in its registration computes: it runs code from
#: before they were named (intake._generators). A record or a WorkerInfo made here computes all of them.
LEGACY_GENERATORS = "splitmix64"
ALL_GENERATORS = ",".join(GENERATORS)


@dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    region: str
    host: str
    pid: int
    cores: int
    concurrency: int
    pi_samples_per_s: float
    mandelbrot_iters_per_s: float
    state: WorkerState
    started_at: float
    last_seen: float
    isa: str = "unknown"
    kernel_threads: int = 1
    cpu_limit: float = 100.0
    pause_reason: str = ""
    watts_per_core: float = 15.0
    chunks_done: int = 0
    busy_ms: int = 0
    perf_pi: Performance = Performance(0.0, 0.0, 0)
    perf_mandelbrot: Performance = Performance(0.0, 0.0, 0)
    ok: int = 0
    failed: int = 0
    expired: int = 0
    public_key: str = ""            # Ed25519, hex: the volunteer's account (trust/identity.py)
    grid_zone: str = ""             # reported by the worker (POST /api/update_grid_info), "" if none
    grid_renewable_share: float = 0.0
    grid_reported_at: float = 0.0
    audits_passed: int = 0          # spot checks passed since it was last caught: its reputation (trust/reputation.py)
    audits_failed: int = 0
    quarantined: str = ""           # why it gets no work ("" if it may), until an operator lifts it
    quarantined_at: float = 0.0
    tee: str = "none"               # the TEE it claims to run in (trust/attestation.Tee): a claim, not proof
    attestation: str = "none"       # the control plane's conclusion: none, unverified or verified (attestation.Status)
    attestation_note: str = ""      # why it is not verified
    bundle_max: int = 1             # the most chunks it takes in one message (hydra.compute_bundle); 1: one each
    generators: str = ALL_GENERATORS  # the π generators its kernels compute, comma-separated

    def computes(self, generator: str) -> bool:
        """Whether its kernels compute π with ``generator`` (``""``: no generator asked for)."""
        return not generator or generator in self.generators.split(",")

    def is_live(self, now: float, timeout_s: float) -> bool:
        return self.state is WorkerState.ONLINE and now - self.last_seen <= timeout_s

    @property
    def reputation(self) -> int:
        """Spot checks passed since it was last caught (trust/reputation.py)."""
        return self.audits_passed

    @property
    def reliability(self) -> float:
        return reliability(self.ok, self.failed, self.expired)

    def with_(self, **changes: Any) -> "WorkerInfo":
        """A copy with ``changes``: what ``dataclasses.replace`` returns (the class has no
        __post_init__ to run), without its per-call introspection of 30 fields, which dominated the
        fleet view's build (``cluster.capped``) and the simulator's profile at 10^5 workers."""
        unknown = changes.keys() - _FIELDS
        if unknown:
            raise TypeError(f"WorkerInfo has no field {sorted(unknown)}")
        new = object.__new__(type(self))  # a frozen dataclass with a __dict__: fill it directly
        state = new.__dict__
        state.update(self.__dict__)
        state.update(changes)
        return new

    def rate(self, kind: str) -> float:
        """Work units per second for ``kind``: the observed EWMA; else the other kind's observed
        speed scaled by the calibrations' ratio (what the worker really gets out of its CPU, times
        how the two kernels compare on it); else the calibration."""
        if kind == "pi":  # the hot path of every routing and sizing decision: the observed rate first
            perf = self.perf_pi
            if perf.observations and perf.rate > 0:
                return perf.rate
            other, calibrated, other_calibrated = self.perf_mandelbrot, self.pi_samples_per_s, self.mandelbrot_iters_per_s
        else:
            perf = self.perf_mandelbrot
            if perf.observations and perf.rate > 0:
                return perf.rate
            other, calibrated, other_calibrated = self.perf_pi, self.mandelbrot_iters_per_s, self.pi_samples_per_s
        if other.observations and other.rate > 0 and other_calibrated > 0 and calibrated > 0:
            return other.rate * calibrated / other_calibrated
        return max(calibrated, 1.0)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        for kind in ("pi", "mandelbrot"):
            perf = data.pop(f"perf_{kind}")
            data[f"rate_{kind}"] = perf["rate"]
            data[f"consistency_{kind}"] = getattr(self, f"perf_{kind}").consistency
            data[f"observations_{kind}"] = perf["observations"]
            data[f"speed_{kind}"] = self.rate(kind)  # what scheduling uses: measured, else scaled from calibration
        data["reliability"] = self.reliability
        data["reputation"] = self.reputation
        # The share of each result recomputed by its spot check, at this reputation (trust/reputation.py).
        data["audit_share_pi"] = reputation.picks(JobKind.PI, self.audits_passed) / pi_blocks()
        data["audit_pixels_mandelbrot"] = reputation.picks(JobKind.MANDELBROT, self.audits_passed)
        return data


_FIELDS = frozenset(f.name for f in fields(WorkerInfo))


# What a worker writes about itself on start; counters and the performance model are kept.
_REGISTERED_FIELDS = ("worker_id", "region", "host", "pid", "cores", "concurrency", "pi_samples_per_s",
                      "mandelbrot_iters_per_s", "state", "started_at", "last_seen", "isa", "kernel_threads",
                      "cpu_limit", "pause_reason", "watts_per_core", "public_key", "tee", "attestation",
                      "attestation_note", "bundle_max", "generators")


def pi_blocks() -> int:
    from ..jobs.pi import BLOCKS

    return BLOCKS


def register(client: redis.Redis, info: WorkerInfo) -> None:
    """Create or refresh a worker's record (on start).

    A worker id stays bound to the first key registered with it: another key (another volunteer
    picking the same name) is refused with IdentityError, atomically (WATCH/MULTI)."""
    record = {k: v for k, v in info.to_json().items() if k in _REGISTERED_FIELDS}
    key = keys.worker(info.worker_id)
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)
                existing = pipe.hget(key, "public_key") or pipe.hget(keys.WORKER_KEYS, info.worker_id)
                if existing and info.public_key and existing != info.public_key:
                    raise IdentityError(
                        f"Worker id {info.worker_id!r} is registered to another key; start this worker under "
                        "another name (celery -n NAME@%h, hydra worker --name) or import that worker's key.")
                pipe.multi()
                pipe.hset(key, mapping={k: str(v) for k, v in record.items()})
                pipe.sadd(keys.WORKERS, info.worker_id)
                pipe.hdel(keys.WORKER_KEYS, info.worker_id)  # bound in its record again
                pipe.set(keys.WORKERS_GEN, keys.new_generation())  # control processes read the fleet again
                pipe.execute()
                return
            except redis.WatchError:
                continue


def heartbeat(client: redis.Redis, worker_id: str, *, now: float | None = None,
              state: WorkerState = WorkerState.ONLINE, pause_reason: str = "") -> None:
    now = time.time() if now is None else now
    client.hset(keys.worker(worker_id), mapping={"last_seen": repr(now), "state": state.value,
                                                 "pause_reason": pause_reason})


def touch(client: redis.Redis, worker_id: str, now: float) -> None:
    """A signed result proves the worker is alive as well as a heartbeat does: refresh ``last_seen``
    (of an existing record only). Heartbeats queue behind results on the intake, so a busy worker
    would otherwise look silent whenever the intake lags."""
    if client.exists(keys.worker(worker_id)):
        client.hset(keys.worker(worker_id), "last_seen", repr(now))


def set_offline(client: redis.Redis, worker_id: str, *, said_at: float | None = None) -> None:
    """The worker said goodbye (``said_at``: when, by its own clock: heartbeats it sent before then,
    delivered late, must not bring it back; see intake._register_or_beat)."""
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(keys.worker(worker_id), "state", WorkerState.OFFLINE.value)
        if said_at is not None:
            pipe.hset(keys.worker(worker_id), "left_at", repr(said_at))
        pipe.set(keys.WORKERS_GEN, keys.new_generation())
        pipe.execute()


MAX_CONCURRENCY = 256
MAX_BUNDLE = 256  # chunks in one bundle message (Settings.bundle_max is at most this)


def _parse(raw: dict[str, str]) -> WorkerInfo | None:
    """A worker record, or None if it is malformed or implausible (volunteers write these
    records, so nothing in them may break scheduling: speeds must be finite and positive, and a
    worker runs at most as many processes as it has cores)."""
    try:
        info = WorkerInfo(
            worker_id=raw["worker_id"], region=raw["region"], host=raw.get("host", "?"), pid=int(raw.get("pid", 0)),
            cores=int(raw.get("cores", 1)), concurrency=max(1, int(raw.get("concurrency", 1))),
            pi_samples_per_s=float(raw.get("pi_samples_per_s", 0.0)),
            mandelbrot_iters_per_s=float(raw.get("mandelbrot_iters_per_s", 0.0)),
            state=WorkerState(raw.get("state", "offline")), started_at=float(raw.get("started_at", 0.0)),
            last_seen=float(raw.get("last_seen", 0.0)), isa=raw.get("isa", "unknown"),
            kernel_threads=int(raw.get("kernel_threads", 1)), cpu_limit=float(raw.get("cpu_limit", 100.0)),
            pause_reason=raw.get("pause_reason", ""), watts_per_core=float(raw.get("watts_per_core", 15.0)),
            chunks_done=int(raw.get("chunks_done", 0)),
            busy_ms=int(raw.get("busy_ms", 0)), perf_pi=performance(raw, "pi"),
            perf_mandelbrot=performance(raw, "mandelbrot"), ok=int(raw.get("ok", 0)),
            failed=int(raw.get("failed", 0)), expired=int(raw.get("expired", 0)),
            public_key=raw.get("public_key", ""), grid_zone=raw.get("grid_zone", ""),
            grid_renewable_share=float(raw.get("grid_renewable_share", 0.0)),
            grid_reported_at=float(raw.get("grid_reported_at", 0.0)),
            audits_passed=int(raw.get("audits_passed", 0)), audits_failed=int(raw.get("audits_failed", 0)),
            quarantined=raw.get("quarantined", ""), quarantined_at=float(raw.get("quarantined_at") or 0.0),
            tee=raw.get("tee", "none"), attestation=raw.get("attestation", "none"),
            attestation_note=raw.get("attestation_note", ""),
            bundle_max=min(max(int(raw.get("bundle_max", 1)), 1), MAX_BUNDLE),
            generators=raw.get("generators") or ALL_GENERATORS,
        )
    except (KeyError, ValueError):
        return None  # a half-written or foreign record: ignore rather than break scheduling
    speeds = (info.pi_samples_per_s, info.mandelbrot_iters_per_s, info.perf_pi.rate, info.perf_mandelbrot.rate)
    if not all(math.isfinite(v) and v >= 0 for v in speeds) or not 0 < info.cpu_limit <= 100 \
            or not 0 < info.watts_per_core <= 500 or not 0 <= info.grid_renewable_share <= 1:
        return None
    return replace(info, concurrency=min(info.concurrency, max(info.cores, 1), MAX_CONCURRENCY))


def parse_record(raw: dict[str, str]) -> WorkerInfo | None:
    """A worker record as read (HGETALL), or None if it is absent, malformed or implausible."""
    return _parse(raw) if raw else None


def get_worker(client: redis.Redis, worker_id: str) -> WorkerInfo | None:
    raw = client.hgetall(keys.worker(worker_id))
    return _parse(raw) if raw else None


def list_workers(client: redis.Redis) -> list[WorkerInfo]:
    ids = sorted(client.smembers(keys.WORKERS))
    pipe = client.pipeline(transaction=False)
    for worker_id in ids:
        pipe.hgetall(keys.worker(worker_id))
    return [w for w in (_parse(raw) for raw in pipe.execute() if raw) if w is not None]


def mark_silent_offline(client: redis.Redis, settings: Settings, *, now: float | None = None) -> list[str]:
    """Mark workers whose heartbeat stopped as offline and empty their direct queues; return their ids.

    The messages in a silent worker's queue are chunks leased to it: their leases expire and they are
    sent elsewhere either way, so a worker that comes back (its link healed, its machine woken) starts
    with new work instead of first computing, for nothing, every chunk queued while it was away (the
    chaos soak saw returning volunteers busy for 25 s with results the intake ignored)."""
    now = time.time() if now is None else now
    silent = [w.worker_id for w in list_workers(client)
              if w.state is not WorkerState.OFFLINE and now - w.last_seen > settings.worker_timeout_s]
    for worker_id in silent:
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(keys.worker(worker_id), "state", WorkerState.OFFLINE.value)
            pipe.delete(*keys.priority_queues(keys.direct_queue(worker_id)))
            pipe.set(keys.WORKERS_GEN, keys.new_generation())
            pipe.execute()
    return silent


def prunable(worker: WorkerInfo, settings: Settings, now: float) -> bool:
    """Whether ``worker`` is due to be pruned: offline for longer than ``HYDRA_WORKER_RETENTION_S``
    (0: never), and not quarantined (its record is what keeps it out of work: an operator lifts it)."""
    return (settings.worker_retention_s > 0 and worker.state is WorkerState.OFFLINE and not worker.quarantined
            and now - worker.last_seen > settings.worker_retention_s)


def prune_offline(client: redis.Redis, settings: Settings, *, now: float | None = None) -> list[str]:
    """Remove the workers :func:`prunable` says are due; return their ids, sorted.

    Removed: the registry entry (``hydra:worker:{id}`` and its id in ``hydra:workers``), its empty
    in-flight set and its direct queue (``<id>.dq2`` and kombu's priority sub-queues of it), where
    nothing is sent once it is offline. Kept: its token account and journal entries, its results log
    (a later catch still revokes those results), an enrolled volunteer's credentials, and the key its
    id is bound to (``hydra:worker_keys``, so another key cannot take the id over). A worker that still
    holds a chunk (a non-empty in-flight set) is left for a later sweep. Each removal is one
    WATCH/MULTI transaction: a worker that sends a heartbeat meanwhile is not removed."""
    now = time.time() if now is None else now
    return sorted(w.worker_id for w in list_workers(client)
                  if prunable(w, settings, now) and _prune_one(client, settings, w.worker_id, now))


def _prune_one(client: redis.Redis, settings: Settings, worker_id: str, now: float) -> bool:
    record, inflight = keys.worker(worker_id), keys.worker_inflight(worker_id)
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(record, inflight)
                raw = pipe.hgetall(record)
                info = _parse(raw) if raw else None
                if info is None or not prunable(info, settings, now) or pipe.scard(inflight):
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.delete(record, inflight, *keys.priority_queues(keys.direct_queue(worker_id)))
                pipe.srem(keys.WORKERS, worker_id)
                pipe.set(keys.WORKERS_GEN, keys.new_generation())
                if info.public_key:
                    pipe.hset(keys.WORKER_KEYS, worker_id, info.public_key)
                pipe.execute()
                return True
            except redis.WatchError:
                continue
