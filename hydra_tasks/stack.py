"""A local Hydra stack: the embedded Redis plus real worker, beat, webapp and Flower processes.

Used by ``hydra demo``, ``hydra up`` and the integration tests. Every process runs in its own
session (process group) with its output in a log file, and :meth:`LocalStack.stop` ends all of
them: SIGTERM (Celery's warm shutdown), then SIGKILL for anything still alive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Callable, Sequence

import redis

from . import keys
from .embedded import EmbeddedRedis
from .errors import StackError
from .settings import Settings
from .worker.registry import list_workers


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

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


@dataclass
class LocalStack:
    """Start and stop the processes of a Hydra deployment on this machine."""

    settings: Settings
    log_dir: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    redis_url: str | None = None
    _embedded: EmbeddedRedis | None = None

    # --- Redis ----------------------------------------------------------------------------
    def start_redis(self) -> str:
        """Use HYDRA_REDIS_URL if set, else start the embedded server in the data dir."""
        if self.settings.redis_url:
            self.redis_url = self.settings.redis_url
        else:
            self._embedded = EmbeddedRedis(self.settings.redis_dir)
            self.redis_url = self._embedded.start()
        return self.redis_url

    def client(self) -> redis.Redis:
        if self.redis_url is None:
            raise StackError("Start Redis first (LocalStack.start_redis()).")
        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    def child_settings(self) -> Settings:
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
        proc = Proc(name, popen, log_path)
        self.procs[name] = proc
        return proc

    def start_control(self, *, name: str = "control", beat: bool = True, concurrency: int = 1,
                      pool: str = "prefork") -> Proc:
        schedule = self.log_dir / f"{name}-beat-schedule" if beat else None
        return self.spawn(name, celery_worker_argv([keys.CONTROL_QUEUE], name=name, concurrency=concurrency,
                                                   pool=pool, beat_schedule=schedule))

    def start_region_worker(self, region: str, *, name: str | None = None, concurrency: int = 1,
                            pool: str = "prefork", cpu_limit: float | None = None) -> Proc:
        name = name or f"{region}-{sum(1 for p in self.procs if p.startswith(region + '-')) + 1}"
        # Each local worker is its own volunteer, with its own key (and so its own token account).
        env = {"HYDRA_KEY_FILE": str(self.settings.data_dir / "keys" / f"{name}.key")}
        if cpu_limit is not None:
            env["HYDRA_CPU_LIMIT"] = str(cpu_limit)
        return self.spawn(name, celery_worker_argv([keys.region_queue(region)], name=name,
                                                   concurrency=concurrency, pool=pool), env=env)

    def start_webapp(self, *, port: int, host: str = "127.0.0.1") -> Proc:
        return self.spawn("webapp", [sys.executable, "-m", "flask", "--app", "hydra_webapp:create_app", "run",
                                     "--host", host, "--port", str(port), "--no-reload"])

    def start_flower(self, *, port: int, address: str = "127.0.0.1") -> Proc:
        return self.spawn("flower", [sys.executable, "-m", "celery", "-A", "hydra_tasks", "flower",
                                     f"--port={port}", f"--address={address}"])

    # --- waiting --------------------------------------------------------------------------
    def wait_until(self, what: str, predicate: Callable[[], bool], *, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            dead = [p for p in self.procs.values() if not p.alive]
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
