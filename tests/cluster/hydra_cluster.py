"""A whole Hydra deployment on a network of namespaces (:mod:`netns`): the test cluster of issue 14.

- **The control host** is this machine, on the bridge as the network's first address and named
  ``hydra-control``: Redis over TLS only with ACLs (``hydra up --tls`` does the same), the control
  worker, the intake worker, beat on its own and the webapp (gunicorn, HTTPS), each its own process
  group, watched by :class:`hydra_tasks.supervise.Supervisor` as ``hydra up`` watches its parts: a
  part that dies (kill -9) is started again after 1 s, Redis on the same port from its AOF.
- **Each volunteer host** is a namespace of its own. Its volunteer is enrolled with
  ``hydra volunteer add`` (its own Redis user and credentials, the control host named
  ``hydra-control`` in its URL) and runs ``hydra worker --join``'s command line in that namespace,
  with an environment holding only what a remote volunteer has (its data dir, credentials file,
  the deployment's CA). Its path to Redis goes through a fault proxy (``faultproxy.py``) in its own
  namespace (its /etc/hosts names 127.0.0.1 ``hydra-control``), which adds latency, jitter,
  stalls and resets; bandwidth is capped with ``tc tbf`` on its link; a partition takes its link
  down. A volunteer's wall clock can be set off by minutes (``skewed_clock/sitecustomize.py``).

Everything is stopped and removed by :meth:`Cluster.stop`, also after a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import redis

from hydra_tasks import keys
from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.settings import Settings
from hydra_tasks.stack import LocalStack, Proc
from hydra_tasks.supervise import RestartPolicy, Supervisor
from hydra_tasks.trust import volunteers
from hydra_tasks.worker import join
from hydra_tasks.worker.registry import list_workers

import netns

HERE = Path(__file__).resolve().parent
PROXY_SCRIPT = HERE / "faultproxy.py"
CONTROL_NAME = "hydra-control"
REGION = "eu-west"

#: Timings for the cluster: leases and silence are noticed in seconds, as in tests/support.FAST, with a
#: little more room for liveness (heartbeats cross a shaped link and a proxy).
CLUSTER_TIMINGS = dict(lease_s=4.0, sweep_interval_s=0.5, heartbeat_s=0.5, worker_timeout_s=6.0)

#: The control plane's parts a supervisor keeps running (volunteers are not supervised: they leave).
CONTROL_PARTS = ("redis", "control", "intake", "beat", "webapp")


def unavailable() -> str | None:
    """Why the cluster cannot run here (None: it can)."""
    reason = netns.unavailable()
    if reason:
        return reason
    from hydra_tasks.embedded import find_redis7_server
    from hydra_tasks.errors import EmbeddedRedisError

    try:
        find_redis7_server()
    except EmbeddedRedisError:
        return "the cluster needs redis-server >= 7 (apt-get install redis-server)"
    return None


@dataclass
class Volunteer:
    name: str
    host: netns.Host
    data_dir: Path
    creds: volunteers.Credentials
    clock_offset_s: float = 0.0
    proxy: Proc | None = None
    proxy_control: Path | None = None

    @property
    def worker_id(self) -> str:
        return self.creds.worker_id


@dataclass
class Cluster:
    """The control host plus ``volunteer_names`` volunteer hosts; :meth:`start`, then :meth:`stop`."""

    data_dir: Path
    volunteer_names: Sequence[str] = ("v1", "v2", "v3", "v4")
    clock_offsets_s: dict[str, float] = field(default_factory=dict)
    proxies: bool = True
    ha: bool = False  # Redis replicated and watched by Sentinel (replication.HaRedis) instead of one server
    overrides: dict[str, Any] = field(default_factory=dict)
    ha_redis: Any = None
    net: netns.Network | None = None
    stack: LocalStack | None = None
    volunteers: dict[str, Volunteer] = field(default_factory=dict)
    supervisor: Supervisor | None = None
    events: list[str] = field(default_factory=list)
    _watch: threading.Thread | None = None
    _stop_watch: threading.Event = field(default_factory=threading.Event)
    _supervised: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- start ------------------------------------------------------------------------------------
    def start(self) -> "Cluster":
        try:
            self._start()
        except BaseException:
            self.dump_logs()
            self.stop()
            raise
        return self

    def _start(self) -> None:
        resolve = {n: "127.0.0.1" for n in self.volunteer_names} if self.proxies else None
        self.net = netns.Network(self.volunteer_names, control_names=(CONTROL_NAME,))
        self.net.build(control_names_resolve_to=resolve)
        settings = Settings().with_(data_dir=self.data_dir, isolate=True,
                                    public_host=f"{CONTROL_NAME},{self.net.control_address}",
                                    **{**CLUSTER_TIMINGS, **self.overrides})
        if self.ha:
            settings = self._start_ha(settings)
        self.stack = LocalStack(settings, log_dir=self.data_dir / "logs", tls=not self.ha)
        self.stack.start_redis()
        self.stack.start_control(beat=False)
        self.stack.start_beat()
        web = self.stack.start_webapp(port=_free_port(self.net.control_address), host=self.net.control_address)
        self.stack.wait_ready(web.name, timeout_s=60)
        for name in self.volunteer_names:
            self.add_volunteer(name)
        self.wait_for_volunteers(self.volunteer_names, timeout_s=90)
        self.stack.wait_for_log("control", "ready.", timeout_s=60)
        self.stack.wait_for_log("intake", "ready.", timeout_s=60)
        self.supervise(CONTROL_PARTS)

    def _start_ha(self, settings: Settings) -> Settings:
        """A primary, two replicas and three Sentinels on the control host's bridge address, TLS with the
        deployment's CA; the control plane waits for a replica on every ledger write."""
        from hydra_tasks.replication import HaOptions, HaRedis
        from hydra_tasks.trust.tls import ensure_tls

        assert self.net is not None
        tls = ensure_tls(settings)
        self.ha_redis = HaRedis(self.data_dir / "ha-redis", replicas=2, sentinels=3, host=self.net.control_address,
                                options=HaOptions(down_after_ms=1000, failover_timeout_ms=3000, quorum=2, tls=True,
                                                  tls_dir=str(tls.ca.parent)))
        url = self.ha_redis.start(timeout_s=60)
        return settings.with_(redis_url=url, redis_ca=str(tls.ca), redis_wait_replicas=1, redis_wait_timeout_ms=2000)

    @property
    def redis_port(self) -> int:
        assert self.stack is not None and self.stack.redis_url is not None
        from urllib.parse import urlsplit

        return int(urlsplit(self.stack.redis_url).port or 6379)

    def add_volunteer(self, name: str) -> Volunteer:
        """Enrol ``name`` and start its proxy and worker on its host (a revoked name is enrolled again)."""
        assert self.stack is not None and self.net is not None
        client = self.stack.client()
        if (old := volunteers.get(client, name)) is not None and old.state is not volunteers.VolunteerState.REVOKED:
            volunteers.revoke(client, self.stack.settings, name)
        url = self.stack.redis_url or ""
        creds = volunteers.add(client, self.stack.settings, name, [REGION],
                               redis_url_for_volunteer=volunteers.volunteer_url(url, host=CONTROL_NAME),
                               ca_pem=volunteers.deployment_ca(self.stack.child_settings(), url))
        home = self.data_dir / "volunteers" / name
        home_settings = self.stack.settings.with_(data_dir=home)
        join.store(home_settings, creds)
        vol = Volunteer(name, self.net.hosts[name], home, creds, self.clock_offsets_s.get(name, 0.0))
        self.volunteers[name] = vol
        if self.proxies:
            self._start_proxy(vol)
        env = self.volunteer_env(vol)
        argv = vol.host.argv(join.worker_argv(creds, concurrency=1, pool="prefork", loglevel="INFO"))
        self._spawn(f"worker-{name}", argv, env)
        return vol

    def volunteer_env(self, vol: Volunteer) -> dict[str, str]:
        """What a remote volunteer's shell has: its data dir, key, credentials and the deployment's CA;
        no operator secret, no control-plane setting; its wall clock off if it is set so."""
        assert self.stack is not None
        hydra = {"HYDRA_KEY_FILE": str(vol.data_dir / "worker.key"),
                 **join.child_env(self.stack.settings.with_(data_dir=vol.data_dir), vol.data_dir / join.CREDENTIALS_FILE,
                                  vol.creds)}
        env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_") and k not in ("LD_PRELOAD",)}
        env.update(PYTHONUNBUFFERED="1", HYDRA_DATA_DIR=str(vol.data_dir),
                   HYDRA_HEARTBEAT_S=str(self.stack.settings.heartbeat_s),
                   HYDRA_WORKER_TIMEOUT_S=str(self.stack.settings.worker_timeout_s), **hydra)
        if vol.clock_offset_s:  # its wall clock is off (skewed_clock/sitecustomize.py says how, and its limit)
            env.update(CLUSTER_CLOCK_OFFSET_S=str(vol.clock_offset_s),
                       PYTHONPATH=os.pathsep.join(p for p in (str(HERE / "skewed_clock"), env.get("PYTHONPATH")) if p))
        return env

    def _start_proxy(self, vol: Volunteer) -> None:
        assert self.net is not None
        vol.proxy_control = self.data_dir / "proxies" / f"{vol.name}.sock"
        vol.proxy_control.parent.mkdir(parents=True, exist_ok=True)
        vol.proxy_control.unlink(missing_ok=True)
        argv = vol.host.argv([sys.executable, str(PROXY_SCRIPT), "--listen", f"127.0.0.1:{self.redis_port}",
                              "--upstream", f"{self.net.control_address}:{self.redis_port}",
                              "--control", str(vol.proxy_control)])
        vol.proxy = self._spawn(f"proxy-{vol.name}", argv, {k: v for k, v in os.environ.items()
                                                            if not k.startswith("HYDRA_")})
        deadline = time.monotonic() + 20
        while not vol.proxy_control.exists():
            if not vol.proxy.alive or time.monotonic() > deadline:
                raise RuntimeError(f"the fault proxy of {vol.name} did not start:\n{vol.proxy.log_tail()}")
            time.sleep(0.05)

    def proxy(self, name: str) -> Any:
        """The control client of ``name``'s fault proxy (``faultproxy.ProxyControl``)."""
        from faultproxy import ProxyControl

        path = self.volunteers[name].proxy_control
        assert path is not None, "this cluster runs without proxies"
        return ProxyControl(str(path))

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        assert self.stack is not None
        self.stack.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.stack.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                     start_new_session=True)
        proc = Proc(name, popen, log_path, argv=list(argv))
        self.stack.procs[name] = proc
        return proc

    # --- supervision ---------------------------------------------------------------------------------
    def supervise(self, names: Sequence[str]) -> None:
        """Keep these control-plane parts running (restart after 1 s, as ``hydra up`` does)."""
        assert self.stack is not None
        with self._lock:
            self._supervised = set(names)
            parts = [p for p in self.stack.supervised_parts() if p.name in self._supervised]
            self.supervisor = Supervisor(parts, policy=RestartPolicy(max_restarts=20), say=self._say)
        if self._watch is None:
            self._watch = threading.Thread(target=self._watch_loop, name="cluster-supervisor", daemon=True)
            self._watch.start()

    def _say(self, line: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {line}")

    def _watch_loop(self) -> None:
        while not self._stop_watch.wait(0.25):
            with self._lock:
                if self.supervisor is not None:
                    try:
                        self.supervisor.check()
                    except Exception as exc:  # noqa: BLE001 - recorded; the test sees the part stay dead
                        self._say(f"supervisor: {exc}")

    def wait_restarted(self, name: str, *, timeout_s: float = 60.0) -> None:
        """Wait until the supervisor has started ``name`` again (and it answers)."""
        assert self.stack is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if name == "redis":
                with self._lock:  # not while the supervisor is half-way through restarting it
                    if self.stack.redis_exit_code() is None:
                        with contextlib.suppress(redis.RedisError):
                            if self.stack.client().ping():
                                return
            elif self.stack.procs[name].alive and f"{name} restarted" in " ".join(self.events[-20:]):
                return
            time.sleep(0.1)
        raise AssertionError(f"{name} was not restarted within {timeout_s:g}s: {self.events[-10:]}")

    # --- faults ----------------------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """kill -9 a control-plane part (``redis`` too) or a volunteer's worker (``worker-v1``)."""
        assert self.stack is not None
        if name == "redis":
            pid = self.stack._embedded.pid if self.stack._embedded is not None else None
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            return
        self.stack.kill(name, signal.SIGKILL)

    def leave(self, name: str) -> None:
        """The volunteer's machine is gone: its worker is killed (no goodbye) and its link cut."""
        assert self.net is not None
        self.kill(f"worker-{name}")
        self.net.partition(name)

    # --- reading the state --------------------------------------------------------------------------------
    def app(self) -> HydraCelery:
        assert self.stack is not None
        return create_app(self.stack.child_settings())

    def client(self) -> redis.Redis:
        assert self.stack is not None
        return self.stack.client()

    def live_worker_ids(self) -> set[str]:
        now, client = time.time(), self.client()
        assert self.stack is not None
        return {w.worker_id for w in list_workers(client) if w.is_live(now, self.stack.settings.worker_timeout_s)}

    def wait_for_volunteers(self, names: Sequence[str], *, timeout_s: float = 60.0) -> None:
        wanted = {self.volunteers[n].worker_id for n in names}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if wanted <= self.live_worker_ids():
                    return
            time.sleep(0.2)
        raise AssertionError(f"volunteers {sorted(wanted - self.live_worker_ids())} did not come up "
                             f"within {timeout_s:g}s")

    def hydra_cli(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``hydra ARGS`` as the operator on the control host."""
        assert self.stack is not None
        env = self.stack.env()
        return subprocess.run([sys.executable, "-m", "hydra_tasks", *args], env=env, capture_output=True, text=True,
                              timeout=timeout_s)

    def dump_logs(self, lines: int = 40) -> None:
        if self.stack is None:
            return
        for proc in self.stack.procs.values():
            print(f"----- {proc.name} log -----\n{proc.log_tail(lines)}")
        if self.stack._embedded is not None:
            print(f"----- redis log -----\n{self.stack._embedded.log_tail()}")
        print("----- supervisor -----\n" + "\n".join(self.events[-30:]))

    # --- stop -------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every process, then remove the network. Never raises; idempotent."""
        self._stop_watch.set()
        if self._watch is not None:
            self._watch.join(timeout=5)
            self._watch = None
        if self.stack is not None:
            with contextlib.suppress(Exception):
                self.stack.stop(timeout_s=10)
        if self.ha_redis is not None:
            with contextlib.suppress(Exception):
                self.ha_redis.stop()
        if self.net is not None:
            self.net.destroy()
        shutil.rmtree(self.data_dir / "proxies", ignore_errors=True)


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_cluster(data_dir: Path, **kwargs: Any) -> Iterator[Cluster]:
    cluster = Cluster(data_dir, **kwargs)
    try:
        yield cluster.start()
    except BaseException:
        cluster.dump_logs()
        raise
    finally:
        cluster.stop()


def mint_keys(client: redis.Redis, job_id: str) -> dict[str, int]:
    """Per ``{job}:{chunk}`` mint key of this job: how many mint entries the journal holds for it,
    less its reversals (a chunk must be paid at most once)."""
    from hydra_tasks.ledger.audit import journal

    counts: dict[str, int] = {}
    for _, f in journal(client):
        key = f.get("key", "")
        if not key.startswith(f"{job_id}:"):
            continue
        if f.get("type") == "mint":
            counts[key] = counts.get(key, 0) + 1
        elif f.get("type") == "reversal":
            counts[key] = counts.get(key, 0) - 1
    return counts


def worker_chunks(client: redis.Redis, job_id: str) -> dict[str, int]:
    """Chunks of the job each worker had merged (the job's per-worker counters)."""
    from hydra_tasks.jobs import store

    return {w: s.chunks for w, s in store.get_job(client, job_id).workers.items()}


__all__ = ["Cluster", "Volunteer", "running_cluster", "mint_keys", "worker_chunks", "unavailable", "keys", "json"]


# --- used by benchmarks/chaos.py ---
def restart_volunteer(cluster: Cluster, name: str) -> Volunteer:
    """Start ``name``'s worker again on its host with the credentials it was enrolled with (a volunteer
    coming back after :meth:`Cluster.leave`: heal its link first). Its fault proxy is left as it was."""
    assert cluster.stack is not None
    vol = cluster.volunteers[name]
    old = cluster.stack.procs.get(f"worker-{name}")
    if old is not None and old.alive:
        cluster.kill(f"worker-{name}")
    join.store(cluster.stack.settings.with_(data_dir=vol.data_dir), vol.creds)
    env = cluster.volunteer_env(vol)
    argv = vol.host.argv(join.worker_argv(vol.creds, concurrency=1, pool="prefork", loglevel="INFO"))
    cluster._spawn(f"worker-{name}", argv, env)
    return vol


def set_link(cluster: Cluster, name: str, profile: Any, *, seed: int, netem: bool = False) -> None:
    """Give ``name``'s link a ``faultproxy.Profile``: its bandwidth cap with ``tc tbf`` (none for 0),
    delay and jitter with netem if ``netem`` else from the fault proxy, stalls and resets from the proxy
    (seeded with ``seed``)."""
    import dataclasses

    assert cluster.net is not None
    if profile.rate_kbit:
        cluster.net.shape(name, rate_kbit=profile.rate_kbit, delay_ms=profile.delay_ms, jitter_ms=profile.jitter_ms,
                          netem=netem)
    else:
        cluster.net.unshape(name)
    fields = dataclasses.replace(profile, seed=seed, rate_kbit=0)
    if netem and profile.rate_kbit:
        fields = dataclasses.replace(fields, delay_ms=0.0, jitter_ms=0.0)
    cluster.proxy(name).set_profile(fields)
