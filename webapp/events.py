"""Live updates pushed to the dashboard: ``GET /api/events``, a Server-Sent Events stream.

The stream sends what the dashboard shows, as named events whose ``data`` is one JSON object,
each only when it changed since this stream last sent it (and all of them when the stream opens):

==========  ===========================================================================================
event       data
==========  ===========================================================================================
``jobs``    ``{"jobs": [job, ...]}``: the newest 50 jobs, as ``GET /api/jobs`` lists them
``workers`` ``{"workers": [worker, ...]}``: as ``GET /api/workers``
``tokens``  ``{"leaderboard": <GET /api/leaderboard?limit=10>, "token_metrics": <GET /api/token_metrics>}``
``job``     one job as ``GET /api/jobs/<id>`` returns it (``?job=<id>``); ``{"id": id, "gone": true}`` once deleted
``bye``     ``{"reconnect_ms": n}``: the stream's lifetime is over; EventSource reconnects by itself
``problem`` ``{"error": message}``: the server could not read Redis; the stream ends (and is reconnected)
==========  ===========================================================================================

Query parameters: ``topics`` (comma-separated, from ``jobs,workers,tokens,job``; default
``jobs,workers,tokens``, or ``job`` when ``job`` is given) and ``job`` (a job id). Everything sent
is what the public read endpoints already serve; nothing else.

How it works, and why it cannot starve the API:

* **Change detection by polling Redis on the server**, once a second per stream, sending only what
  changed. All streams of one process share each second's reads (:class:`Streams` caches each
  topic's JSON for just under a tick), so N open dashboards cost one set of reads per second, not
  N. This needs nothing from the control plane (no pub/sub to miss or to keep in step with every
  writer: merges in Lua, sweeps, the ledger), and a reconnecting client loses nothing because every
  stream starts with the full state.
* **A bounded number of streams per process** (:data:`MAX_STREAMS`): a stream holds one of
  gunicorn's threads (``hydra up`` runs the gthread worker with 16), so beyond the bound a request
  gets 503 with ``Retry-After``, and the dashboard falls back to polling the JSON API.
* **A maximum lifetime** (:data:`LIFETIME_S`): the server ends each stream after it (with a
  ``bye`` event); EventSource reconnects after the ``retry`` the stream announced. This spreads
  streams over processes and frees threads held by clients that vanished without a FIN.
* **Heartbeat comments** (``: hb``) every :data:`HEARTBEAT_S` seconds keep proxies from closing an
  idle stream and let the server notice a client that went away (the write fails).
* **Shutdown does not wait for streams**: under gunicorn a stream ends (with ``bye``) within a tick
  of the worker being told to stop (SIGTERM), instead of holding the graceful shutdown for its
  full timeout (:func:`server_stopping`).
* ``id:`` is a digest of everything the stream has sent; a reconnecting EventSource sends it back
  as ``Last-Event-ID``, and when nothing changed meanwhile the full state is not sent again.

The read rate limit (``HYDRA_RATE_LIMIT_READS``) counts a stream once, when it opens; it never cuts
an open stream. The app's security headers apply as to every response.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, cast

import redis
from flask import Blueprint, Flask, Response, current_app, request, stream_with_context
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest

from hydra_tasks.errors import JobNotFound
from hydra_tasks.jobs import store
from hydra_tasks.ledger import book as ledger

from .context import hydra
from .jobs import DEFAULT_LIMIT, checked_job_id
from .tokens import leaderboard_view
from .workers import worker_views

log = logging.getLogger(__name__)

bp = Blueprint("events", __name__, url_prefix="/api")

EXTENSION_KEY = "hydra_events"
MAX_STREAMS = 8        # per webapp process; gunicorn runs 16 threads, so 8 always remain for requests
LIFETIME_S = 300.0     # then the server ends the stream and the browser reconnects
HEARTBEAT_S = 15.0
TICK_S = 1.0
RETRY_MS = 2000        # EventSource's reconnection delay, announced at the start of every stream
BUSY_RETRY_S = 30      # Retry-After on a 503: the dashboard polls meanwhile
INDEX_TOPICS = ("jobs", "workers", "tokens")
TOPICS = frozenset({*INDEX_TOPICS, "job"})


@dataclass
class Streams:
    """One process's streams: the bound, the counters, and each tick's shared reads."""

    max_streams: int = MAX_STREAMS
    lifetime_s: float = LIFETIME_S
    heartbeat_s: float = HEARTBEAT_S
    tick_s: float = TICK_S
    open: int = 0          # streams open now
    opened: int = 0        # streams ever opened
    refused: int = 0       # requests refused with 503 (too many streams)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cache: dict[str, tuple[float, str]] = field(default_factory=dict)

    def acquire(self) -> bool:
        with self._lock:
            if self.open >= self.max_streams:
                self.refused += 1
                return False
            self.open += 1
            self.opened += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.open -= 1

    def read(self, key: str, compute: Callable[[], Any], now: float, *, fresh: bool = False) -> str:
        """The topic's JSON, computed at most once per tick for all streams of this process; ``fresh``:
        read now (a new stream's first state must not be older than the page it updates)."""
        with self._lock:
            cached = self._cache.get(key)
        if not fresh and cached is not None and 0 <= now - cached[0] < 0.9 * self.tick_s:
            return cached[1]
        text = json.dumps(compute(), separators=(",", ":"), sort_keys=True)
        with self._lock:
            if len(self._cache) > 256:  # job topics of jobs nobody watches any more
                self._cache.clear()
            self._cache[key] = (now, text)
        return text


def install(app: Flask) -> Streams:
    """Register the blueprint and this app's :class:`Streams` (tests may change its bounds)."""
    streams = Streams()
    app.extensions[EXTENSION_KEY] = streams
    app.register_blueprint(bp)
    return streams


def streams_of(app: Flask) -> Streams:
    return cast(Streams, app.extensions[EXTENSION_KEY])


def server_stopping() -> Callable[[], bool]:
    """A check that says whether the gunicorn worker serving this process is shutting down.

    gunicorn's worker handles SIGTERM with its bound ``handle_exit``, which clears ``worker.alive``;
    the handler's ``__self__`` is that worker. Elsewhere (werkzeug, tests) nothing ever stops."""
    worker = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    if worker is None or not hasattr(worker, "alive"):
        return lambda: False
    return lambda: not getattr(worker, "alive", True)


def _job(job_id: str) -> dict[str, Any]:
    try:
        return store.get_job(hydra().redis, job_id).to_json()
    except JobNotFound:
        return {"id": job_id, "gone": True}


def _computers(job_id: str | None) -> dict[str, tuple[str, Callable[[], Any]]]:
    client = hydra().redis
    found: dict[str, tuple[str, Callable[[], Any]]] = {
        "jobs": ("jobs", lambda: {"jobs": [j.to_json() for j in store.list_jobs(client, limit=DEFAULT_LIMIT)]}),
        "workers": ("workers", lambda: {"workers": worker_views()}),
        "tokens": ("tokens", lambda: {"leaderboard": leaderboard_view(10),
                                      "token_metrics": ledger.token_metrics(client)}),
    }
    if job_id is not None:
        found["job"] = (f"job:{job_id}", lambda: _job(job_id))
    return found


def _topics() -> tuple[list[str], str | None]:
    raw_job = request.args.get("job")
    job_id = None if raw_job is None else checked_job_id(raw_job)
    raw = request.args.get("topics")
    if raw is None:
        return (["job"] if job_id else list(INDEX_TOPICS)), job_id
    topics = [t.strip() for t in raw.split(",") if t.strip()]
    unknown = [t for t in topics if t not in TOPICS]
    if unknown or not topics or len(topics) > len(TOPICS):
        raise BadRequest(f"'topics' must be a comma-separated list of {', '.join(sorted(TOPICS))}; "
                         f"got {raw[:80]!r}.")
    if "job" in topics and job_id is None:
        raise BadRequest("The 'job' topic needs the job: add ?job=<job id>.")
    return sorted(set(topics)), job_id


def _event(name: str, data: str, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {data}\n\n"


def _digest(states: dict[str, str]) -> str:
    h = hashlib.sha1()
    for topic in sorted(states):
        h.update(f"{topic}\0{states[topic]}\0".encode())
    return h.hexdigest()[:20]


@bp.get("/events")
def events() -> ResponseReturnValue:
    """The dashboard's live updates as Server-Sent Events (see the module docstring)."""
    topics, job_id = _topics()
    streams = streams_of(current_app)
    if not streams.acquire():
        from .errors import error_response

        body, status = error_response(
            f"This server already serves {streams.max_streams} live-update streams; poll the JSON API "
            f"(GET /api/jobs, /api/workers) instead, and try the stream again in {BUSY_RETRY_S} s.",
            503, retry_after_s=BUSY_RETRY_S)
        return body, status, {"Retry-After": str(BUSY_RETRY_S)}
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            streams.release()

    last_id = request.headers.get("Last-Event-ID")
    try:
        computers = {t: c for t, c in _computers(job_id).items() if t in topics}
        response = Response(stream_with_context(_stream(streams, computers, last_id, release)),
                            mimetype="text/event-stream")
    except BaseException:
        release()
        raise
    response.headers["Cache-Control"] = "no-cache, no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    response.call_on_close(release)
    return response


def _stream(streams: Streams, computers: dict[str, tuple[str, Callable[[], Any]]], last_id: str | None,
            release: Callable[[], None]) -> Iterator[str]:
    sent: dict[str, str] = {}
    stopping = server_stopping()
    try:
        yield f"retry: {RETRY_MS}\n\n"
        started = last_beat = time.monotonic()
        first = True
        while True:
            now = time.monotonic()
            try:
                states = {topic: streams.read(key, compute, now, fresh=first)
                          for topic, (key, compute) in computers.items()}
            except redis.exceptions.RedisError as exc:  # the details (addresses) go to the log, not to clients
                log.error("GET /api/events: Redis is unavailable: %s", exc)
                yield _event("problem", json.dumps({"error": "Redis is unavailable; the dashboard will retry."}))
                return
            except Exception:  # a bug: the traceback to the log, a plain word to the client, which reconnects
                log.exception("GET /api/events: reading the dashboard's state failed")
                yield _event("problem", json.dumps({"error": "The server could not read the dashboard's state; "
                                                             "the dashboard will retry."}))
                return
            event_id = _digest(states)
            if first and last_id == event_id:
                sent = dict(states)  # the reconnecting client already shows exactly this
            first = False
            for topic, text in states.items():
                if sent.get(topic) != text:
                    sent[topic] = text
                    last_beat = now
                    yield _event(topic, text, event_id)
            if now - last_beat >= streams.heartbeat_s:
                last_beat = now
                yield ": hb\n\n"
            if now - started >= streams.lifetime_s or stopping():
                yield _event("bye", json.dumps({"reconnect_ms": RETRY_MS}))
                return
            time.sleep(streams.tick_s)
    finally:
        release()
