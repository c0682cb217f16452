"""Volunteer worker lifecycle, hooked into Celery's worker signals.

A worker that consumes a region queue (``hydra.region.<r>``) calibrates its speed, sends its
registration, and heartbeats from a daemon thread until it shuts down. It writes nothing to
Redis itself: each of these is a signed envelope sent to the intake (:mod:`hydra_tasks.intake`).
Control-plane workers (``hydra.control``, ``hydra.intake``) do none of this.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from .. import compute as kernels
from .. import intake, keys
from ..errors import IdentityError, KernelError
from ..models import WorkerState
from ..trust import attestation, identity, sealing
from ..trust.envelope import Action
from .throttle import on_battery

log = logging.getLogger(__name__)

_heartbeat_stop = threading.Event()
_registered: dict[str, str] = {}  # worker_id -> region, for this process


def _pause_reason(app: Any) -> str:
    """Why this worker should not take work now ("" if it should)."""
    return "on battery" if app.settings.pause_on_battery and on_battery() else ""


def calibrate(budget_s: float = 0.15, *, threads: int = 1) -> dict[str, float]:
    """Measure π samples/s and Mandelbrot iterations/s with short kernel runs."""
    n, t = 1 << 20, 0.0
    while True:
        t0 = time.perf_counter()
        kernels.pi_hits(12345, 0, n, threads=threads)
        t = time.perf_counter() - t0
        if t >= budget_s / 2 or n >= 1 << 34:
            break
        n *= 4
    pi_rate = n / max(t, 1e-9)
    # Iterations actually done per second (the unit of Mandelbrot speed), on a boundary-heavy view.
    work = np.zeros((128, 128), dtype=np.uint32)
    t0 = time.perf_counter()
    kernels.mandelbrot_counts(xmin=-0.76, ymax=0.128, dx=0.03 / 128, dy=0.03 / 128, col0=0, row0=0, width=128,
                              height=128, max_iter=20_000, threads=threads, work=work)
    mandel_rate = kernels.mandelbrot_iterations(work) / max(time.perf_counter() - t0, 1e-9)
    return {"pi_samples_per_s": pi_rate, "mandelbrot_iters_per_s": mandel_rate}


def region_of(queues: list[str]) -> str | None:
    for queue in queues:
        region = keys.region_of_queue(queue)
        if region:
            return region
    return None


def on_worker_ready(consumer: Any) -> None:
    app = consumer.app
    region = region_of(sorted(app.amqp.queues.consume_from or {}))
    if region is None:
        return
    worker_id = consumer.hostname
    try:
        identity.load_or_create(identity.key_path(app.settings))
    except IdentityError as exc:
        log.critical("worker %s cannot take work: %s", worker_id, exc)
        return
    try:
        variant = kernels.use_variant(app.settings.kernel_variant)
    except KernelError as exc:
        log.critical("worker %s cannot take work: %s", worker_id, exc)
        return
    log.info("worker %s: kernels run the %s variant (this CPU supports %s)", worker_id, variant,
             ", ".join(kernels.build_info()["variants_supported"]))
    threads = app.settings.kernel_threads
    speeds = calibrate(threads=threads)
    concurrency = int(getattr(consumer.controller, "concurrency", 1) or 1)
    tee = attestation.detect()
    log.info("worker %s: trusted execution environment %s%s", worker_id, tee.tee.value,
             f" ({tee.evidence_path})" if tee.evidence_path else "")
    box_key = sealing.pinned_control_key(app.settings) or ""
    if box_key:
        log.info("worker %s: sealed chunks are opened with the control plane's box key %s...", worker_id, box_key[:16])
    else:
        (log.critical if app.settings.encryption else log.info)(
            "worker %s: no control-plane box key pinned, so it cannot open sealed chunks (HYDRA_ENCRYPTION); "
            "an enrolled volunteer needs credentials that carry one, a local worker control-box.pub in its data dir",
            worker_id)
    facts = functools.partial(intake.worker_facts, worker_id, region, concurrency=concurrency, speeds=speeds,
                              settings=app.settings, isa=str(kernels.build_info()["isa"]),
                              tee=tee.tee.value, box_key=box_key)
    _registered[worker_id] = region
    _send(app, Action.REGISTER, {**facts(), **_join(app)})
    log.info("worker %s sent its registration for region %s (%.0f M samples/s)", worker_id, region,
             speeds["pi_samples_per_s"] / 1e6)
    _heartbeat_stop.clear()
    thread = threading.Thread(target=_beat, args=(app, facts), name="hydra-heartbeat", daemon=True)
    thread.start()


def _join(app: Any) -> dict[str, Any]:
    """An enrolled volunteer's one-time join secret, which binds its key at the first registration."""
    if not app.settings.join_file:
        return {}
    from ..trust import volunteers

    creds = volunteers.Credentials.load(app.settings.join_file)
    return {"join": {"name": creds.name, "secret": creds.join_secret}}


#: Heartbeats and the offline notice retry briefly while Redis is away (~1.5 s, plus up to
#: HYDRA_BROKER_TIMEOUT_S per attempt on a server that does not answer): a heartbeat is worth nothing
#: once the next one is due, and a worker stopped during an outage should exit, not wait ~45 s for
#: Redis as a result does (celery_app.PUBLISH_RETRY_POLICY).
BRIEF_RETRY_POLICY: dict[str, float] = {"max_retries": 2, "interval_start": 0.5, "interval_step": 0.5,
                                        "interval_max": 1}


def _send(app: Any, action: Action, body: dict[str, Any], *, retry_policy: dict[str, float] | None = None) -> None:
    from ..tasks import send_to_intake

    send_to_intake(app, action, body, retry_policy=retry_policy)


def _beat(app: Any, facts: Callable[..., dict[str, Any]]) -> None:
    interval = app.settings.heartbeat_s
    failing = False
    while not _heartbeat_stop.wait(interval):
        reason = _pause_reason(app)
        state = WorkerState.PAUSED if reason else WorkerState.ONLINE
        try:
            _send(app, Action.HEARTBEAT, facts(state=state, pause_reason=reason), retry_policy=BRIEF_RETRY_POLICY)
        except Exception as exc:  # noqa: BLE001 - broker outages must not kill the thread; the next beat retries
            # the traceback once per outage, then one line per beat
            log.warning("heartbeat failed (%s); will retry every %gs", exc, interval, exc_info=not failing)
            failing = True
        else:
            if failing:
                log.info("heartbeats are getting through again")
            failing = False


def on_worker_shutdown(app: Any) -> None:
    _heartbeat_stop.set()
    for worker_id in list(_registered):
        try:
            _send(app, Action.OFFLINE, {"worker_id": worker_id}, retry_policy=BRIEF_RETRY_POLICY)
        except Exception:  # noqa: BLE001
            log.warning("could not report %s offline; the sweeper will notice", worker_id)
        _registered.pop(worker_id, None)
