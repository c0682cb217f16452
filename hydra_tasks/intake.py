"""The intake: the control plane's only door for what volunteers say.

Volunteers write nothing to Hydra's state. Everything they report arrives as a signed envelope
(:mod:`hydra_tasks.trust.envelope`) on the ``hydra.intake`` queue, consumed by the intake worker,
which runs nothing but the ``hydra.intake`` task (:mod:`hydra_tasks.worker.gate`). For each
envelope :func:`handle`:

1. checks the envelope's form and signature, against the key it names;
2. finds whose key that is. An enrolled volunteer's key is bound to its name at enrolment
   (:mod:`hydra_tasks.trust.volunteers`), and the worker id is the one issued with it; the body's
   own ``worker_id`` is never believed. In trusted mode (``HYDRA_ISOLATE`` off: a single machine
   whose local workers share the operator's Redis user) a key that belongs to no volunteer may
   still speak for the worker id its body names, but only if that id is unclaimed or already
   bound to this key (first use binds it);
3. only then writes state: the registry, the ledger account, a result's merge, a grid report.

Anything that fails a step is dropped before it has any effect and counted by reason in
``hydra:intake:dropped`` (shown by ``/api/metrics`` and ``hydra status``).
"""

from __future__ import annotations

import enum
import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Mapping

import redis

from . import keys
from .errors import HydraError, IdentityError, MalformedMessage, SealError, SignatureError
from .grid import GridError
from .grid.site import GridReport, store_report, zone_known_locally
from .jobs import collect
from .ledger import book as ledger
from .lua import scripts
from .models import WorkerState
from .scheduling import Publish, PublishBundle, dispatcher
from .scheduling.router import carbon_provider, router_for
from .settings import REGION_RE, Settings
from .trust import attestation, envelope, sealing
from .trust.envelope import Action, Envelope
from .worker import registry

log = logging.getLogger(__name__)

TASK_NAME = "hydra.intake"


class Dropped(str, enum.Enum):
    """Why an intake message was dropped (the field names of ``hydra:intake:dropped``)."""

    MALFORMED = "malformed"            # not an envelope, or a body that does not fit its action
    BAD_SIGNATURE = "bad signature"    # the signature does not verify against the key it names
    UNKNOWN_KEY = "unknown key"        # isolated mode: no active volunteer has this key (or a join was refused)
    WRONG_WORKER = "wrong worker"      # speaks for a worker id bound to another key
    WRONG_REGION = "wrong region"      # registers in a region it was not admitted to
    UNKNOWN_TASK = "unknown task"      # another task name on the intake queue (worker/gate.py)
    REFUSED = "refused"                # authentic, but refused (a stale grid report, an unknown zone)
    UNSEALED = "unsealed"              # HYDRA_ENCRYPTION: a result with data in the clear, or a worker that
                                       # has not pinned this control plane's box key (trust/sealing.py)
    BAD_BOX = "bad box"                # a sealed result that does not open (tampered, or sealed to another key)


def drop(client: redis.Redis, reason: Dropped, detail: str) -> str:
    client.hincrby(keys.INTAKE_DROPPED, reason.value, 1)
    log.warning("intake dropped a message (%s): %s", reason.value, detail[:300])
    return f"dropped: {reason.value}"


def dropped_counts(client: redis.Redis) -> dict[str, int]:
    return {reason: int(n) for reason, n in client.hgetall(keys.INTAKE_DROPPED).items()}


# --- the volunteer side --------------------------------------------------------------------------
def worker_facts(worker_id: str, region: str, *, concurrency: int, speeds: Mapping[str, float],
                 settings: Settings, isa: str, state: WorkerState = WorkerState.ONLINE,
                 pause_reason: str = "", tee: str = "none", box_key: str = "") -> dict[str, Any]:
    """What a worker says about itself in its registration and in every heartbeat (``tee``: what
    :func:`hydra_tasks.trust.attestation.detect` found, a claim the control plane verifies or not;
    ``box_key``: the control plane's box public key it pinned, "" if none, see trust/sealing.py)."""
    return {"worker_id": worker_id, "region": region, "host": socket.gethostname(), "pid": os.getpid(),
            "cores": os.cpu_count() or 1, "concurrency": concurrency,
            "pi_samples_per_s": speeds["pi_samples_per_s"] * settings.cpu_limit / 100,
            "mandelbrot_iters_per_s": speeds["mandelbrot_iters_per_s"] * settings.cpu_limit / 100,
            "isa": isa, "kernel_threads": settings.kernel_threads, "cpu_limit": settings.cpu_limit,
            "watts_per_core": settings.watts_per_core, "state": state.value, "pause_reason": pause_reason,
            "tee": tee, "box_key": box_key, "bundle_max": settings.bundle_max,
            "generators": list(kernel_generators())}



def kernel_generators() -> tuple[str, ...]:
    """The π generators this code's kernels compute (jobs/pi.py names a job's)."""
    from .compute import GENERATORS

    return GENERATORS

# --- the control side ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Speaker:
    """Who sent an envelope, as the control plane knows it."""

    worker_id: str
    public_key: str
    regions: tuple[str, ...] | None   # the regions it was admitted to; None = any (trusted mode)


def handle(client: redis.Redis, settings: Settings, raw: object, *, publish: Publish,
           publish_bundle: PublishBundle | None = None, now: float | None = None) -> str:
    """Open, authenticate and apply one intake message; returns what became of it. ``publish_bundle``:
    how the dispatch that follows a result sends bundles (without it, each chunk goes alone)."""
    now = time.time() if now is None else now
    try:
        env = envelope.open_envelope(raw)
    except MalformedMessage as exc:
        return drop(client, Dropped.MALFORMED, str(exc))
    except SignatureError as exc:
        return drop(client, Dropped.BAD_SIGNATURE, str(exc))
    # A plain result's first reads go with the ones that identify its sender: one round trip for both.
    pre = Prereads.of(env)
    speaker = _identify(client, settings, env, pre)
    if isinstance(speaker, str):
        return speaker
    try:
        if env.action in (Action.REGISTER, Action.HEARTBEAT):
            return _register_or_beat(client, settings, env, speaker, now)
        if env.action is Action.OFFLINE:
            if registry.get_worker(client, speaker.worker_id) is not None:
                registry.set_offline(client, speaker.worker_id, said_at=env.sent_at)
            return "offline"
        if env.action in (Action.RESULT, Action.RESULTS):
            return _results(client, settings, env, speaker, publish, now, pre, publish_bundle=publish_bundle)
        return _grid(client, settings, env, speaker, now)
    except _Malformed as exc:
        return drop(client, Dropped.MALFORMED, f"{env.action.value} from {speaker.worker_id}: {exc}")


class _Malformed(HydraError):
    pass


class Prereads:
    """The first reads of every plain result an envelope carries (:class:`.collect.Preread`), queued
    on the pipeline that identifies the sender."""

    def __init__(self, reads: list[collect.Preread]) -> None:
        self.reads = reads

    @classmethod
    def of(cls, env: Envelope) -> "Prereads | None":
        if env.action is Action.RESULT:
            bodies: list[Any] = [env.body]
        elif env.action is Action.RESULTS and isinstance(env.body.get("results"), list):
            bodies = env.body["results"][:MAX_RESULTS]
        else:
            return None
        reads = [collect.Preread.of(b) if isinstance(b, Mapping) and not sealing.is_sealed(b) else None
                 for b in bodies]
        return cls([r for r in reads if r is not None]) if any(reads) else None

    def queue(self, pipe: redis.client.Pipeline) -> None:
        for read in self.reads:
            read.queue(pipe)

    def take(self, replies: list[Any]) -> None:
        for n, read in enumerate(self.reads):
            read.take(replies[n * collect.Preread.size:(n + 1) * collect.Preread.size])

    def get(self, body: Mapping[str, Any]) -> collect.Preread | None:
        ids = (body.get("job_id"), body.get("chunk_id"), body.get("worker_id"))
        return next((read for read in self.reads if read.ids == ids), None)


#: results in one RESULTS envelope at most (a bundle holds at most registry.MAX_BUNDLE chunks)
MAX_RESULTS = registry.MAX_BUNDLE


def _identify(client: redis.Redis, settings: Settings, env: Envelope,
              pre: Prereads | None = None) -> Speaker | str:
    """The speaker behind the envelope's key, or the drop outcome. ``pre``: a result's first reads,
    sent in the same round trip (their replies are used only once the sender is known)."""
    from .trust import volunteers

    # One round trip for what the common cases need: the volunteer bound to the key, and (trusted mode)
    # whether the worker id the body names is an enrolled volunteer's, and the key its record is bound to.
    named = env.body.get("worker_id")
    worker_id = named if isinstance(named, str) and 0 < len(named) <= 200 else ""
    name, _, host = worker_id.rpartition("@")
    reads = client.pipeline(transaction=False)
    reads.hget(keys.VOLUNTEER_KEYS, env.key)
    reads.exists(keys.volunteer(name))
    reads.hget(keys.worker(worker_id), "public_key")
    if pre is not None:
        pre.queue(reads)
    replies = reads.execute(raise_on_error=False)
    for reply in replies[:3]:
        if isinstance(reply, Exception):
            raise reply
    bound_name, enrolled_id, bound = replies[:3]
    if pre is not None:
        pre.take(replies[3:])
    record = volunteers.active_record(client, bound_name, env.key)
    if record is None and env.action is Action.REGISTER and isinstance(env.body.get("join"), Mapping):
        join = env.body["join"]
        try:
            record = volunteers.bind_key(client, str(join.get("name", "")), str(join.get("secret", "")), env.key)
        except HydraError as exc:
            return drop(client, Dropped.UNKNOWN_KEY, f"join refused: {exc}")
    if record is not None:  # by_key and bind_key give active volunteers only
        return Speaker(record.worker_id, env.key, tuple(record.regions))
    if settings.isolate:
        return drop(client, Dropped.UNKNOWN_KEY, f"{env.action.value} signed by a key no active volunteer holds")
    # Trusted mode: the worker id the body names, if this key holds it (or it is free and this registers it).
    if not worker_id:
        return drop(client, Dropped.MALFORMED, f"{env.action.value} without a worker_id")
    if host == volunteers.WORKER_HOST and enrolled_id:
        return drop(client, Dropped.WRONG_WORKER, f"{env.action.value} for {worker_id}, an enrolled volunteer's id, "
                                                  "not signed by its bound key")
    if bound and bound != env.key:
        return drop(client, Dropped.WRONG_WORKER, f"{env.action.value} for {worker_id}, which is bound to another key")
    if not bound and env.action not in (Action.REGISTER, Action.HEARTBEAT):
        return drop(client, Dropped.WRONG_WORKER, f"{env.action.value} for {worker_id}, which never registered")
    return Speaker(worker_id, env.key, None)


def _number(body: Mapping[str, Any], name: str, lo: float, hi: float, *, integer: bool = False) -> Any:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) \
            or not math.isfinite(value) or not lo <= value <= hi:
        raise _Malformed(f"{name!r} must be a{'n integer' if integer else ' number'} in [{lo}, {hi}]")
    return value


def _text(body: Mapping[str, Any], name: str, limit: int) -> str:
    value = body.get(name, "")
    if not isinstance(value, str) or len(value) > limit:
        raise _Malformed(f"{name!r} must be text of at most {limit} characters")
    return value


def _facts(body: Mapping[str, Any], speaker: Speaker, now: float, settings: Settings) -> registry.WorkerInfo:
    region = _text(body, "region", 40)
    if not REGION_RE.match(region):
        raise _Malformed(f"region {region[:40]!r} is not a region name")
    try:
        state = WorkerState(body.get("state", "online"))
    except ValueError:
        raise _Malformed("'state' must be online or paused") from None
    if state is WorkerState.OFFLINE:
        raise _Malformed("'state' must be online or paused")
    try:
        tee = attestation.Tee(body.get("tee", "none"))
    except ValueError:
        raise _Malformed(f"'tee' must be one of {', '.join(t.value for t in attestation.Tee)}") from None
    # A claim: no worker sends evidence yet, and no verifier here accepts any (trust/attestation.py).
    status, note = attestation.assess(settings.attestation, tee, None)
    return registry.WorkerInfo(
        worker_id=speaker.worker_id, region=region, host=_text(body, "host", 200),
        pid=_number(body, "pid", 0, 2**31, integer=True), cores=_number(body, "cores", 1, 4096, integer=True),
        concurrency=_number(body, "concurrency", 1, registry.MAX_CONCURRENCY, integer=True),
        pi_samples_per_s=_number(body, "pi_samples_per_s", 1.0, 1e15),
        mandelbrot_iters_per_s=_number(body, "mandelbrot_iters_per_s", 1.0, 1e15),
        state=state, started_at=now, last_seen=now, isa=_text(body, "isa", 40),
        kernel_threads=_number(body, "kernel_threads", 1, 256, integer=True),
        cpu_limit=float(_number(body, "cpu_limit", 1, 100)), pause_reason=_text(body, "pause_reason", 200),
        watts_per_core=float(_number(body, "watts_per_core", 0.1, 500)), public_key=speaker.public_key,
        tee=tee.value, attestation=status.value, attestation_note=note,
        bundle_max=_number(body, "bundle_max", 1, registry.MAX_BUNDLE, integer=True) if "bundle_max" in body else 1,
        generators=_generators(body),
    )


def _generators(body: Mapping[str, Any]) -> str:
    """The π generators a worker says its kernels compute; one that says nothing predates them."""
    if "generators" not in body:
        return registry.LEGACY_GENERATORS
    value = body["generators"]
    known = kernel_generators()
    if not isinstance(value, list) or not value or len(value) > len(known) or not all(g in known for g in value):
        raise _Malformed(f"'generators' must be a list of some of {', '.join(known)}")
    return ",".join(sorted(set(value), key=known.index))


def _left_at(client: redis.Redis, worker_id: str) -> float:
    """When the worker said goodbye, by its own clock (-inf if it never did)."""
    value = client.hget(keys.worker(worker_id), "left_at")
    try:
        return float(value) if value else -math.inf
    except ValueError:
        return -math.inf


def _register_or_beat(client: redis.Redis, settings: Settings, env: Envelope, speaker: Speaker, now: float) -> str:
    info = _facts(env.body, speaker, now, settings)
    pinned = _text(env.body, "box_key", 64)
    if settings.encryption and pinned != sealing.control_public_hex(settings.data_dir):
        return drop(client, Dropped.UNSEALED,
                    f"{speaker.worker_id} cannot open sealed chunks: it pinned "
                    f"{'another control-plane box key' if pinned else 'no control-plane box key'} "
                    "(an enrolled volunteer needs credentials from `hydra volunteer add` that carry this control "
                    "plane's box key; a local worker needs control-box.pub in the shared data dir)")
    if speaker.regions is not None and info.region not in speaker.regions:
        return drop(client, Dropped.WRONG_REGION,
                    f"{speaker.worker_id} asked for region {info.region}, admitted to {list(speaker.regions)}")
    known = registry.get_worker(client, speaker.worker_id)
    if (env.action is Action.HEARTBEAT and known is not None and known.state is WorkerState.OFFLINE
            and known.pid == info.pid and env.sent_at <= _left_at(client, speaker.worker_id)):
        return "stale"  # sent before the same process said goodbye, delivered after it: it has left
    fresh = (env.action is Action.REGISTER or known is None or known.state is WorkerState.OFFLINE
             or known.pid != info.pid or known.region != info.region
             or known.tee != info.tee)
    if not fresh:
        if not scripts(client).beat(speaker.worker_id, now=now, state=info.state.value, pause_reason=info.pause_reason):
            return "stale"  # it went offline after its record was read above (a goodbye applied meanwhile)
        return "heartbeat"
    try:
        registry.register(client, info)
    except IdentityError as exc:  # the id was claimed by another key meanwhile
        return drop(client, Dropped.WRONG_WORKER, str(exc))
    ledger.open_account(client, speaker.public_key)
    log.info("registered worker %s in region %s (%.0f M samples/s)", speaker.worker_id, info.region,
             info.pi_samples_per_s / 1e6)
    return "registered"


def _results(client: redis.Redis, settings: Settings, env: Envelope, speaker: Speaker, publish: Publish,
             now: float, pre: Prereads | None = None, *, publish_bundle: PublishBundle | None = None) -> str:
    """Collect a RESULT's one result or a RESULTS envelope's several, then refill the sender's window
    once (a signed result proves its worker alive; the dispatch reads what it starts with in the last
    merge's own round trip)."""
    if env.action is Action.RESULT:
        bodies: list[Any] = [env.body]
    else:
        named, listed = env.body.get("worker_id"), env.body.get("results")
        if named != speaker.worker_id:
            return drop(client, Dropped.WRONG_WORKER, f"results naming {str(named)[:80]!r} sent by {speaker.worker_id}")
        if not isinstance(listed, list) or not 0 < len(listed) <= MAX_RESULTS:
            return drop(client, Dropped.MALFORMED, f"results from {speaker.worker_id}: 'results' must be a list of "
                                                   f"1 to {MAX_RESULTS} results")
        bodies = listed
    prefetch = dispatcher.Prefetch(client)
    outcomes = []
    for n, body in enumerate(bodies):
        rider = prefetch if n == len(bodies) - 1 else None
        if not isinstance(body, Mapping):
            outcomes.append(drop(client, Dropped.MALFORMED, f"a result from {speaker.worker_id} that is not an object"))
            continue
        outcomes.append(_result(client, settings, body, speaker, now, pre.get(body) if pre else None, rider))
    dispatcher.dispatch(client, settings, router_for(settings, client), publish, prefetch=prefetch,
                        publish_bundle=publish_bundle)
    return outcomes[0] if len(outcomes) == 1 else ", ".join(outcomes)


def _result(client: redis.Redis, settings: Settings, body: Mapping[str, Any], speaker: Speaker, now: float,
            pre: collect.Preread | None, rider: dispatcher.Prefetch | None) -> str:
    named = body.get("worker_id")
    if named != speaker.worker_id:
        return drop(client, Dropped.WRONG_WORKER, f"a result naming {str(named)[:80]!r} sent by {speaker.worker_id}")
    if sealing.is_sealed(body):
        try:
            body = sealing.open_result_from(settings.data_dir, speaker.public_key, body)
        except SealError as exc:
            return drop(client, Dropped.BAD_BOX, f"a sealed result from {speaker.worker_id}: {exc}")
    elif settings.encryption and (body.get("payload") or body.get("error") is None):
        # Only a refusal may come unsealed: an empty payload and an error (a chunk it could not open).
        return drop(client, Dropped.UNSEALED, f"a plaintext result from {speaker.worker_id} while HYDRA_ENCRYPTION "
                                              "is on (the worker must seal its results to the control plane)")
    return collect.collect(client, settings, body, now=now, touch=True, rider=rider, pre=pre).value


def _grid(client: redis.Redis, settings: Settings, env: Envelope, speaker: Speaker, now: float) -> str:
    body = env.body
    zone = _text(body, "zone", 40)
    report = GridReport(speaker.worker_id, zone, float(_number(body, "renewable_share", 0.0, 1.0)),
                        float(_number(body, "timestamp", 0, 1e11)))
    provider = carbon_provider(settings)
    try:
        store_report(client, report, speaker.public_key, zone_known=lambda z: zone_known_locally(provider, z),
                     now=now)
    except (SignatureError, GridError) as exc:
        return drop(client, Dropped.REFUSED, f"grid report from {speaker.worker_id}: {exc}")
    return "grid"
