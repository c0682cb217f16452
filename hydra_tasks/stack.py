"""A local Hydra stack: the embedded Redis plus real worker, beat, webapp and Flower processes.

Used by ``hydra demo``, ``hydra up`` and the integration tests. Every process runs in its own
session (process group) with its output in a log file, and :meth:`LocalStack.stop` ends all of
them: SIGTERM (Celery's warm shutdown), then SIGKILL for anything still alive.
:meth:`LocalStack.supervised_parts` describes each part for :mod:`hydra_tasks.supervise`, which
restarts dead ones: a process with the same command, the embedded Redis on the same port and data dir.

With ``tls=True`` (``hydra up --tls``) the embedded Redis serves only ``rediss://`` with the
certificates of :mod:`hydra_tasks.trust.tls`, and every child gets ``HYDRA_REDIS_CA``. The webapp
runs under gunicorn; on any address but loopback it serves HTTPS only (:func:`webapp_argv`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Callable, Sequence

import redis

from . import keys
from .embedded import EmbeddedRedis
from .errors import StackError
from .redis_conn import client_for
from .settings import Settings
from .supervise import Part
from .trust.tls import TlsFiles, ensure_tls
from .worker.registry import list_workers

HOST = "127.0.0.1"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] | None = None  # True once it serves (webapp, Flower); None: running is ready

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def celery_worker_argv(queues: Sequence[str], *, name: str, concurrency: int = 1, pool: str = "prefork",
                       loglevel: str = "INFO", beat_schedule: Path | None = None) -> list[str]:
    argv = [sys.executable, "-m", "celery", "-A", "hydra_tasks", "worker", "-Q", ",".join(queues),
            "-n", f"{name}@%h", "-c", str(concurrency), "-P", pool, "--loglevel", loglevel,
            "--without-mingle", "--without-gossip"]
    if beat_schedule is not None:
        argv += ["-B", "--schedule", str(beat_schedule)]
    return argv


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if a server could listen on ``host:port`` now (bound the way Flask and Flower bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1 and ``localhost``. The
    wildcard addresses (``0.0.0.0``, ``::``, empty) and any other name are not loopback."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def webapp_argv(host: str, port: int, *, tls: TlsFiles | None) -> list[str]:
    """The gunicorn command serving the webapp on ``host:port``: HTTPS with ``tls``'s server certificate
    if given, else plain HTTP, which is refused (StackError) on anything but a loopback address."""
    if tls is None and not is_loopback(host):
        raise StackError(f"Refusing to serve the webapp over plain HTTP on {host!r}, which other machines can "
                         "reach; serve it with TLS (the server certificate of `hydra tls init`) or bind 127.0.0.1.")
    bind = f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"
    argv = [sys.executable, "-m", "gunicorn", "--bind", bind, "--worker-class", "gthread", "--workers", "1",
            "--threads", "16", "--graceful-timeout", "10", "--access-logfile", "-", "--error-logfile", "-",
            "--preload"]  # load the app before binding: once the port is open, requests are answered
    if tls is not None:
        argv += ["--certfile", str(tls.cert), "--keyfile", str(tls.key)]
    return argv + ["hydra_webapp:create_app()"]


def http_ok(url: str, *, ca: Path | None = None) -> Callable[[], bool]:
    """A readiness check: True once ``url`` answers 200 (an https:// server must be signed by ``ca``)."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None) if url.startswith("https:") else None

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return bool(response.status == 200)
        except (OSError, ValueError):
            return False

    return check


@dataclass
class LocalStack:
    """Start and stop the processes of a Hydra deployment on this machine."""

    settings: Settings
    log_dir: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    redis_url: str | None = None
    tls: bool = False  # the embedded Redis serves rediss:// only (hydra up --tls)
    redis_port: int = 0  # the embedded Redis's port; 0: a free one
    web_url: str | None = None  # where the webapp answers, once started
    _embedded: EmbeddedRedis | None = None
    _redis_port: int | None = None
    _tls_files: TlsFiles | None = None

    # --- Redis ----------------------------------------------------------------------------
    def start_redis(self) -> str:
        """Use HYDRA_REDIS_URL if set, else start the embedded server in the data dir (with ACLs,
        operator user ``hydra``, when HYDRA_ISOLATE is set)."""
        if self.settings.redis_url:
            if self.tls and not self.settings.redis_url.startswith("rediss://"):
                raise StackError("TLS was asked for, but HYDRA_REDIS_URL is a plaintext redis:// server; point it at "
                                 "a rediss:// server, or unset it to let Hydra run its own Redis over TLS.")
            self.redis_url = self.settings.redis_url
        else:
            self._embedded = EmbeddedRedis(self.settings.redis_dir, port=self.redis_port,
                                           isolated=self.settings.isolate, tls=self.tls_files() if self.tls else None)
            self.redis_url = self._embedded.start()
            self._redis_port = self._embedded.port
        return self.redis_url

    @property
    def local_redis_url(self) -> str | None:
        """What the control plane on this host uses: the embedded server's Unix socket when it serves
        TLS (no TLS cost on every command, not reachable from the network), else :attr:`redis_url`.
        Workers, the compute plane, always use :attr:`redis_url`, as volunteers elsewhere do."""
        if self._embedded is not None and self._embedded.tls is not None and self.redis_url is not None:
            return self._embedded.local_url
        return self.redis_url

    def redis_exit_code(self) -> int | None:
        """How the embedded Redis ended; None while it runs (or if this stack uses HYDRA_REDIS_URL)."""
        return self._embedded.exit_code() if self._embedded is not None else None

    def restart_redis(self) -> None:
        """Start the embedded Redis again after it died: same data dir (so its AOF, with every
        acknowledged write) and same port and password, so every process's URL still works."""
        if self._embedded is None or self._redis_port is None:
            raise StackError("This stack did not start an embedded Redis, so it cannot restart one.")
        self._embedded.stop()  # reaps the dead server and removes its server.json
        self._embedded = EmbeddedRedis(self.settings.redis_dir, port=self._redis_port,
                                       isolated=self.settings.isolate, tls=self._embedded.tls)
        if self._embedded.start() != self.redis_url:  # the network URL; the local one follows from it
            self._embedded.stop()
            raise StackError(f"The restarted Redis has another URL (was its password file "
                             f"{self.settings.redis_dir / 'password'} changed?); restart the whole stack.")

    def tls_files(self) -> TlsFiles:
        """This data dir's CA and server certificate, created (or renewed) on first use."""
        if self._tls_files is None:
            self._tls_files = ensure_tls(self.settings)
        return self._tls_files

    def client(self) -> redis.Redis:
        if self.redis_url is None:
            raise StackError("Start Redis first (LocalStack.start_redis()).")
        return client_for(self.child_settings(), self.redis_url, decode_responses=True)

    def child_settings(self) -> Settings:
        """The settings control-plane children run with: this Redis's local URL and, if it serves
        TLS, its CA."""
        if self._embedded is not None and self._embedded.tls is not None:
            return self.settings.with_(redis_url=self.local_redis_url, redis_ca=str(self._embedded.tls.ca))
        return self.settings.with_(redis_url=self.redis_url)

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
        base.update(self.child_settings().to_env())
        base["PYTHONUNBUFFERED"] = "1"
        return base

    # --- processes ------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> Proc:
        if name in self.procs and self.procs[name].alive:
            raise StackError(f"A process named {name!r} is already running.")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**self.env(), **(env or {})}, start_new_session=True)
        proc = Proc(name, popen, log_path, argv=list(argv), extra_env=dict(env or {}))
        self.procs[name] = proc
        return proc

    def restart(self, name: str, *, timeout_s: float = 60.0) -> Proc:
        """Start a dead process again with the same command, environment and log file, and wait
        until it is ready."""
        old = self.procs[name]
        if old.alive:
            raise StackError(f"{name} is still running; stop it before restarting it.")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(old.popen.pid, signal.SIGKILL)  # what is left of its group, e.g. pool children
        proc = self.spawn(name, old.argv, env=old.extra_env)
        proc.ready = old.ready
        try:
            self.wait_ready(name, timeout_s=timeout_s)
        except BaseException:  # not ready in time: do not leave it half-started
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(timeout=10)
            raise
        return proc

    def supervised_parts(self) -> list[Part]:
        """The embedded Redis (first: everything else needs it) and every process, for a Supervisor."""
        parts: list[Part] = []
        if self._embedded is not None:
            parts.append(Part("redis", self.redis_exit_code, self.restart_redis,
                              lambda: self._embedded.log_tail() if self._embedded else "(no log)"))
        return parts + [self._process_part(name) for name in self.procs]

    def _process_part(self, name: str) -> Part:
        def restart() -> None:
            self.restart(name)

        return Part(name, lambda: self.procs[name].popen.poll(), restart, lambda: self.procs[name].log_tail())

    def start_control(self, *, name: str = "control", beat: bool = True, concurrency: int = 1,
                      pool: str = "prefork", intake: bool = True) -> Proc:
        """The control worker (dispatch, sweep, checkpoint; beat with ``beat``) and, with ``intake``,
        the intake worker beside it (:meth:`start_intake`). Returns the control worker."""
        self.ensure_box_key()
        schedule = self.log_dir / f"{name}-beat-schedule" if beat else None
        proc = self.spawn(name, celery_worker_argv([keys.CONTROL_QUEUE], name=name, concurrency=concurrency,
                                                   pool=pool, beat_schedule=schedule))
        if intake:
            self.start_intake(name="intake" if name == "control" else f"{name}-intake")
        return proc

    def start_beat(self, *, name: str = "beat") -> Proc:
        """Celery beat on its own (as compose runs it), sending ``hydra.sweep`` and
        ``hydra.checkpoint`` to the control queue; for a control worker started with ``beat=False``."""
        return self.spawn(name, [sys.executable, "-m", "celery", "-A", "hydra_tasks", "beat", "--loglevel", "INFO",
                                 "--schedule", str(self.log_dir / f"{name}-schedule")])

    def ensure_box_key(self) -> None:
        """Create the control plane's box key pair in the data dir before any worker starts, so the
        local workers find its public half (control-box.pub) there and pin it (trust/sealing.py)."""
        from .trust import sealing

        sealing.control_box_key(self.settings.data_dir)

    def start_intake(self, *, name: str = "intake", concurrency: int | None = None, pool: str = "prefork") -> Proc:
        """The intake worker: the only consumer of ``hydra.intake``, where volunteers' signed
        messages arrive; it runs nothing else (worker/gate.py). ``concurrency``: its processes
        (default ``HYDRA_INTAKE_PROCESSES``)."""
        processes = self.settings.intake_processes if concurrency is None else concurrency
        return self.spawn(name, celery_worker_argv([keys.INTAKE_QUEUE], name=name, concurrency=processes,
                                                   pool=pool))

    def start_region_worker(self, region: str, *, name: str | None = None, concurrency: int = 1,
                            pool: str = "prefork", cpu_limit: float | None = None,
                            extra_env: dict[str, str] | None = None) -> Proc:
        name = name or f"{region}-{sum(1 for p in self.procs if p.startswith(region + '-')) + 1}"
        self.ensure_box_key()
        if self.settings.isolate:
            if extra_env:
                raise StackError("extra_env is for local workers of the trusted mode; an enrolled volunteer "
                                 "takes its settings from its own environment")
            return self.start_volunteer(name, [region], concurrency=concurrency, pool=pool, cpu_limit=cpu_limit)
        # Each local worker is its own volunteer, with its own key (and so its own token account).
        env = {"HYDRA_KEY_FILE": str(self.settings.data_dir / "keys" / f"{name}.key"),
               "HYDRA_REDIS_URL": self.redis_url or ""}  # the network URL (TLS), as a volunteer elsewhere
        if cpu_limit is not None:
            env["HYDRA_CPU_LIMIT"] = str(cpu_limit)
        env.update(extra_env or {})  # e.g. a volunteer's own HYDRA_BUNDLE_MAX
        return self.spawn(name, celery_worker_argv([keys.region_queue(region)], name=name,
                                                   concurrency=concurrency, pool=pool), env=env)

    def start_volunteer(self, name: str, regions: Sequence[str], *, concurrency: int = 1, pool: str = "prefork",
                        cpu_limit: float | None = None) -> Proc:
        """Enrol a local volunteer (its own Redis user) and run its worker as a remote one would:
        `hydra worker --join` with the credentials it was given, in a data dir of its own. A name
        enrolled before (an earlier run on this data dir) is revoked and enrolled afresh."""
        from .trust import volunteers
        from .worker import join

        client = self.client()
        if (old := volunteers.get(client, name)) is not None and old.state is not volunteers.VolunteerState.REVOKED:
            volunteers.revoke(client, self.settings, name)
        url = self.redis_url or ""
        creds = volunteers.add(client, self.settings, name, regions, redis_url_for_volunteer=volunteers.volunteer_url(
            url), ca_pem=volunteers.deployment_ca(self.child_settings(), url))
        home = self.settings.with_(data_dir=self.settings.data_dir / "volunteers" / name)
        path = join.store(home, creds)
        env = {"HYDRA_DATA_DIR": str(home.data_dir), "HYDRA_KEY_FILE": str(home.data_dir / "worker.key"),
               "HYDRA_ISOLATE": "", **join.child_env(home, path, creds)}
        if cpu_limit is not None:
            env["HYDRA_CPU_LIMIT"] = str(cpu_limit)
        return self.spawn(name, join.worker_argv(creds, concurrency=concurrency, pool=pool, loglevel="INFO"), env=env)

    def start_webapp(self, *, port: int, host: str = HOST, flower_url: str = "") -> Proc:
        """Start the dashboard under gunicorn: plain HTTP on loopback, else HTTPS only (with this data
        dir's server certificate). It is ready (:meth:`wait_ready`) once GET /healthz answers.
        ``flower_url``: a Flower to link from the dashboard instead of HYDRA_FLOWER_URL (the caller decides;
        ``hydra up`` passes its own only where the operator set none)."""
        tls = None if is_loopback(host) else self.tls_files()
        env = {"HYDRA_FLOWER_URL": flower_url} if flower_url else None
        proc = self.spawn("webapp", webapp_argv(host, port, tls=tls), env=env)
        client_host = HOST if host in ("0.0.0.0", "", "::", "[::]") else host
        if ":" in client_host and not client_host.startswith("["):
            client_host = f"[{client_host}]"
        self.web_url = f"{'https' if tls else 'http'}://{client_host}:{port}"
        proc.ready = http_ok(f"{self.web_url}/healthz", ca=tls.ca if tls else None)
        return proc

    def start_flower(self, *, port: int, address: str = HOST) -> Proc:
        """Start Flower; it is ready (:meth:`wait_ready`) once GET /healthcheck answers."""
        proc = self.spawn("flower", [sys.executable, "-m", "celery", "-A", "hydra_tasks", "flower",
                                     f"--port={port}", f"--address={address}"])
        proc.ready = http_ok(f"http://{HOST if address in ('0.0.0.0', '') else address}:{port}/healthcheck")
        return proc

    # --- waiting --------------------------------------------------------------------------
    def wait_ready(self, name: str, *, timeout_s: float = 60.0) -> None:
        """Wait until process ``name`` serves (if it has a readiness check); StackError if it exits."""
        proc = self.procs[name]
        if proc.ready is not None:
            self.wait_until(f"{name} to answer", proc.ready, timeout_s=timeout_s, watch=[proc])

    def wait_until(self, what: str, predicate: Callable[[], bool], *, timeout_s: float = 30.0,
                   watch: Sequence[Proc] | None = None) -> None:
        """Wait for ``predicate``; StackError if it times out or a watched process (default: all) exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            dead = [p for p in (self.procs.values() if watch is None else watch) if not p.alive]
            if dead:
                raise StackError(f"{dead[0].name} exited (code {dead[0].popen.returncode}) while waiting for "
                                 f"{what}; its log ends:\n{dead[0].log_tail()}")
            time.sleep(0.1)
        raise StackError(f"Timed out after {timeout_s:g}s waiting for {what}; logs are in {self.log_dir}.")

    def wait_for_workers(self, count: int, *, timeout_s: float = 60.0) -> None:
        """Wait until ``count`` region workers have registered and are live."""
        client = self.client()

        def ready() -> bool:
            now = time.time()
            return sum(w.is_live(now, self.settings.worker_timeout_s) for w in list_workers(client)) >= count

        self.wait_until(f"{count} live worker(s)", ready, timeout_s=timeout_s)

    def wait_for_log(self, name: str, text: str, *, timeout_s: float = 60.0) -> None:
        proc = self.procs[name]
        self.wait_until(f"{name!r} to log {text!r}", lambda: text in proc.log_tail(400), timeout_s=timeout_s)

    # --- stopping -------------------------------------------------------------------------
    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send a signal to a process's whole group (kill -9 a worker and its pool children)."""
        proc = self.procs[name]
        try:
            os.killpg(proc.popen.pid, sig)
        except ProcessLookupError:
            pass
        if sig == signal.SIGKILL:
            proc.popen.wait(timeout=10)

    def stop(self, *, timeout_s: float = 15.0) -> None:
        """Stop every process this stack started, then the embedded Redis. Idempotent."""
        for proc in self.procs.values():
            if proc.alive:
                try:
                    os.killpg(proc.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.popen.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            try:  # pool children or a stuck worker: make sure the whole group is gone
                os.killpg(proc.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if proc.popen.poll() is None:
                proc.popen.wait(timeout=5)
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None

    def __enter__(self) -> "LocalStack":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
