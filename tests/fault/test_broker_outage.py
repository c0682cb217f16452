"""Broker outages: Redis killed with -9 and restarted from its AOF, Redis frozen (SIGSTOP) for longer
than a lease, a volunteer's network path cut silently (packets dropped, no connection closed), and
Redis refusing every write with ``NOREPLICAS`` (as a freshly promoted primary does until its other
replica re-attaches).
After each, EVERY surviving worker consumes again without a restart (the kombu reconnect trap,
celery#3541, #5935, #8030, kombu#1836), the job that was running ends with exactly the undisturbed π
hit count, no ``{job}:{chunk}`` is minted twice and ``hydra ledger verify`` passes.

The stack: Redis, the control worker with beat, the intake worker, one region worker on Redis's own
address ("near") and one that reaches Redis through :class:`LinkProxy` ("far", its network path).
Timings: ``support.FAST`` (4 s leases) and ``HYDRA_BROKER_TIMEOUT_S`` = 3 s, so that a dead
connection is noticed in seconds (celery_app.broker_timeouts; 30 s in production). Enrolled
volunteers over TLS, each its own Redis user, through a kill -9 of an isolated Redis and its AOF: the
network-namespace cluster (tests/cluster/test_cluster_faults.py)."""

from __future__ import annotations

import collections
import functools
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator

import pytest
import redis

from hydra_tasks import compute, keys
from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.jobs import store
from hydra_tasks.jobs.submit import submit_job
from hydra_tasks.jobs.view import JobView
from hydra_tasks.models import WorkerState
from hydra_tasks.stack import LocalStack, celery_worker_argv
from hydra_tasks.worker.registry import list_workers
from support import running_stack, wait_for, wait_for_job

pytestmark = [pytest.mark.integration, pytest.mark.fault]

SEED, CHUNK = 20261202, 100_000_000  # ~0.15 s chunks
SAMPLES = 30 * CHUNK
BROKER_TIMEOUT_S = 3.0
REGION = "eu-west"
# After Redis is back: every worker must have reconnected and computed a chunk of a new job within this
# (reconnect attempts are at most 5 s apart, worker/gate.py; a dead connection is dropped within
# ~BROKER_TIMEOUT_S; plus a loaded 2-core machine).
RESUME_S = 30.0


class LinkProxy:
    """A TCP relay to Redis on 127.0.0.1: a volunteer's network path. :meth:`cut` is a silent partition:
    nothing passes any more but no connection is closed, as when a link drops packets. Connections
    opened before :meth:`heal` stay dead for ever (the far side's state is gone, as after a NAT
    timeout or a failover), so a client recovers only if it notices by itself and reconnects."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.generation = 0  # a connection forwards only while its generation is current and the link is up
        self.down = False
        self.closed = False
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, name="link-proxy", daemon=True).start()

    def cut(self) -> None:
        self.down = True
        self.generation += 1

    def heal(self) -> None:
        self.generation += 1  # what connected during the cut never reached the other side either
        self.down = False

    def close(self) -> None:
        self.closed = True
        for sock in [self.listener, *self.socks]:
            sock.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
            except OSError:  # Redis is down: refused, as it would be without the proxy
                client.close()
                continue
            self.socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, self.generation), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket, generation: int) -> None:
        peer = {client: upstream, upstream: client}
        watched = [client, upstream]
        try:
            while watched and not self.closed:
                readable, _, _ = select.select(watched, [], [], 0.2)
                live = generation == self.generation and not self.down
                for sock in readable:
                    data = sock.recv(65536)
                    if live and data:
                        peer[sock].sendall(data)
                    elif live or sock is client:  # a close passes on; a dead link's client may give up
                        if not data:
                            return
                    elif not data:  # the server's close never reaches the client of a dead link
                        watched.remove(sock)
                    # else: dropped, like a packet into a partition
        except OSError:
            return
        finally:
            client.close()
            upstream.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory.mktemp("outage"), {REGION: 1}, adaptive=False, pi_chunk_samples=CHUNK,
                       broker_timeout_s=BROKER_TIMEOUT_S) as stack:
        yield stack


@pytest.fixture(scope="module")
def link(stack: LocalStack) -> Iterator[LinkProxy]:
    """The far worker's path to Redis, and the far worker on it."""
    assert stack.redis_url is not None
    base, port = stack.redis_url.rsplit(":", 1)
    proxy = LinkProxy(int(port.split("/")[0]))
    name = "far-1"
    env = {"HYDRA_KEY_FILE": str(stack.settings.data_dir / "keys" / f"{name}.key"),
           "HYDRA_REDIS_URL": f"{base}:{proxy.port}/{port.split('/', 1)[1]}"}
    stack.spawn(name, celery_worker_argv([keys.region_queue(REGION)], name=name), env=env)
    try:
        stack.wait_for_workers(2, timeout_s=60)
        yield proxy
    finally:
        proxy.close()


def redis_pid(stack: LocalStack) -> int:
    return int((stack.settings.redis_dir / "redis.pid").read_text().strip())


def worker_ids(app: HydraCelery) -> set[str]:
    return {w.worker_id for w in list_workers(app.redis)}


def start_job(app: HydraCelery, samples: int = SAMPLES) -> str:
    expected_hits(SEED, samples)  # computed now, not while the workers recover
    expected_hits(SEED + 1, 20 * CHUNK)
    job_id = submit_job(app, {"kind": "pi", "params": {"samples": samples, "seed": SEED}}).id
    wait_for(lambda: store.get_job(app.redis, job_id).chunks_done >= 3, timeout_s=60, what="the job to make progress")
    return job_id


@functools.lru_cache(maxsize=None)
def expected_hits(seed: int, samples: int) -> int:
    return compute.pi_hits(seed, 0, samples)


def assert_exact_and_minted_once(app: HydraCelery, job: JobView, samples: int = SAMPLES, seed: int = SEED) -> None:
    assert job.state == "done", job
    assert job.result is not None and job.result["hits"] == expected_hits(seed, samples)
    assert job.result["samples"] == samples
    mints = collections.Counter(entry["key"] for _, entry in app.redis.xrange(keys.LEDGER_JOURNAL)
                                if entry.get("type") == "mint")
    assert not {k: n for k, n in mints.items() if n > 1}, "a chunk was minted twice"
    ours = {k for k in mints if k.startswith(f"{job.id}:")}  # its chunks, and the audits of them (trust/audits.py)
    chunks = {k for k in ours if not k.split(":", 1)[1].startswith(keys.AUDIT_CHUNK_PREFIX)}
    assert len(chunks) == job.chunks_total, f"{len(chunks)} chunks minted out of {job.chunks_total}"
    assert not ours & app.redis.smembers(keys.LEDGER_MINTED)  # FINISH compacted its mint keys: it refuses more


class Resumed:
    """When each worker first had a chunk merged after ``since`` (Redis back), from the jobs' per-worker
    shares (``last_ms``: when the worker's latest chunk of that job was merged)."""

    def __init__(self, app: HydraCelery, since: float) -> None:
        self.app, self.since = app, since
        self.first: dict[str, float] = {}

    def poll(self, *job_ids: str) -> None:
        for job_id in job_ids:
            for wid, share in store.get_job(self.app.redis, job_id).workers.items():
                if share.last_ms / 1000 > self.since and wid not in self.first:
                    self.first[wid] = time.time() - self.since


def wait_for_job_watching(app: HydraCelery, job_id: str, resumed: Resumed, timeout_s: float) -> JobView:
    def final() -> bool:
        resumed.poll(job_id)
        return store.get_job(app.redis, job_id).is_final

    wait_for(final, timeout_s=timeout_s, what=f"job {job_id} to finish", poll_s=0.05)
    return wait_for_job(app, job_id)


def assert_every_worker_resumes(app: HydraCelery, resumed: Resumed) -> None:
    """Once every worker heartbeats again, submit a job: every one must compute chunks of it. (Heartbeats
    come from another connection than the consumer's: a worker can look live and consume nothing.)"""
    workers = worker_ids(app)

    def all_live() -> bool:
        now = time.time()
        return workers <= {w.worker_id for w in list_workers(app.redis)
                           if w.state is WorkerState.ONLINE and w.is_live(now, app.settings.worker_timeout_s)}

    wait_for(all_live, timeout_s=RESUME_S, what="every worker to heartbeat again")
    job_id = submit_job(app, {"kind": "pi", "params": {"samples": 20 * CHUNK, "seed": SEED + 1}}).id
    submitted = time.time()
    started: set[str] = set()

    def all_started() -> bool:
        resumed.poll(job_id)
        started.update(w for w, share in store.get_job(app.redis, job_id).workers.items() if share.chunks)
        return workers <= started

    try:
        wait_for(all_started, timeout_s=RESUME_S, what="every worker to compute a chunk of a new job", poll_s=0.05)
    except AssertionError:
        raise AssertionError(f"only {sorted(started)} of {sorted(workers)} computed chunks of a job submitted "
                             f"{submitted - resumed.since:.1f}s after Redis came back, within {RESUME_S:g}s") from None
    done = wait_for_job(app, job_id, timeout_s=60)
    assert_exact_and_minted_once(app, done, 20 * CHUNK, SEED + 1)
    print(f"first chunk merged per worker, s after recovery: "
          f"{ {w.split('@')[0]: round(t, 1) for w, t in sorted(resumed.first.items())} }")


class WorkerLogs:
    """What the region workers logged from now on: to see a result published across the outage."""

    def __init__(self, stack: LocalStack) -> None:
        self.procs = [p for name, p in stack.procs.items() if name not in ("control", "intake")]
        self.offsets = {p.name: p.log_path.stat().st_size for p in self.procs}

    def since(self) -> str:
        text = ""
        for proc in self.procs:
            with open(proc.log_path, "rb") as log:
                log.seek(self.offsets[proc.name])
                text += log.read().decode(errors="replace")
        return text

    def wait_until_one_computes(self) -> None:
        """Return while some worker is computing a chunk (its log's last task line: "received"), so that
        the outage begins before that chunk's result is published."""
        def computing() -> bool:
            for proc in self.procs:
                lines = [line for line in proc.log_tail(20).splitlines() if "Task hydra.compute_chunk[" in line]
                if lines and lines[-1].endswith("received"):
                    return True
            return False

        wait_for(computing, timeout_s=30, what="a worker to be computing a chunk", poll_s=0.005)

    def assert_a_result_was_published_across(self, outage_s: float) -> None:
        """A chunk finished while Redis was away had its result published once Redis was back (the
        task took about as long as the outage), and no chunk's task failed on the broker."""
        text = self.since()
        took = [float(s) for s in re.findall(r"Task hydra\.compute_chunk\[[^]]+\] succeeded in ([0-9.]+)s", text)]
        assert max(took, default=0.0) >= outage_s - 2, (
            f"no result was held across the {outage_s:g}s outage (longest task {max(took, default=0.0):.1f}s)")
        assert "raised unexpected" not in text, "a chunk's task failed on the broker: its result was lost"


def ledger_verify(app: HydraCelery) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")} | app.settings.to_env()
    return subprocess.run([sys.executable, "-m", "hydra_tasks", "ledger", "verify"], env=env, capture_output=True,
                          text=True, timeout=60)


def check_recovery(app: HydraCelery, job_id: str, back: float) -> None:
    resumed = Resumed(app, back)
    job = wait_for_job_watching(app, job_id, resumed, timeout_s=120)
    print(f"job done {time.time() - back:.1f}s after recovery: re-sent {job.redispatched}, lease expiries "
          f"{job.expiries}, duplicate results {job.duplicates}")
    assert_exact_and_minted_once(app, job)
    assert_every_worker_resumes(app, resumed)
    verified = ledger_verify(app)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_after_kill_9_of_redis_and_a_restart_from_its_aof_every_worker_resumes_and_the_job_is_exact(
        stack: LocalStack, link: LinkProxy, app: HydraCelery) -> None:
    job_id = start_job(app)
    logs = WorkerLogs(stack)
    logs.wait_until_one_computes()
    os.kill(redis_pid(stack), signal.SIGKILL)  # its result will be ready while Redis is away
    time.sleep(6.0)  # longer than a lease (4 s)
    stack.restart_redis()
    check_recovery(app, job_id, time.time())
    logs.assert_a_result_was_published_across(6.0)


def test_after_redis_froze_for_longer_than_a_lease_every_worker_resumes_and_the_job_is_exact(
        stack: LocalStack, link: LinkProxy, app: HydraCelery) -> None:
    job_id = start_job(app)
    logs = WorkerLogs(stack)
    pid = redis_pid(stack)
    logs.wait_until_one_computes()
    os.kill(pid, signal.SIGSTOP)  # connections stay open, nothing answers: a silent partition of everyone
    try:
        time.sleep(8.0)  # > a lease (4 s) and > HYDRA_BROKER_TIMEOUT_S: clients time out and reconnect meanwhile
    finally:
        os.kill(pid, signal.SIGCONT)
    check_recovery(app, job_id, time.time())
    logs.assert_a_result_was_published_across(8.0)


def test_a_worker_cut_off_silently_reconnects_by_itself_once_its_link_is_back(
        stack: LocalStack, link: LinkProxy, app: HydraCelery) -> None:
    job_id = start_job(app)
    link.cut()  # the far worker's connections go dead without a FIN, and stay dead after the heal
    time.sleep(8.0)
    link.heal()
    check_recovery(app, job_id, time.time())


def test_while_redis_refuses_writes_with_noreplicas_every_worker_waits_and_resumes_and_the_job_is_exact(
        stack: LocalStack, link: LinkProxy, app: HydraCelery) -> None:
    """What a Sentinel failover looks like to the workers for a few seconds: the new primary answers, but
    refuses writes (``min-replicas-to-write``, replication.py) until the other replica has re-attached.
    Acks, heartbeats and results meet ``NOREPLICAS``; kombu took it for a channel error and every worker
    exited ("Unrecoverable error: ResponseError"). Now it is a connection error (redis_conn.NoReplicas):
    they reconnect and go on."""
    job_id = start_job(app)
    logs = WorkerLogs(stack)
    logs.procs = list(stack.procs.values())  # control and intake too
    logs.offsets = {p.name: p.log_path.stat().st_size for p in logs.procs}
    logs.wait_until_one_computes()
    app.redis.config_set("min-replicas-to-write", 1)  # no replica is attached: every write is refused
    try:
        with pytest.raises(redis.exceptions.ConnectionError, match="NOREPLICAS"):
            app.redis.set("hydra:test:noreplicas", 1)
        time.sleep(8.0)
    finally:
        app.redis.config_set("min-replicas-to-write", 0)
    check_recovery(app, job_id, time.time())
    text = logs.since()
    assert "Unrecoverable error" not in text, "a worker exited on NOREPLICAS"
    assert "raised unexpected" not in text, "a chunk's task failed on the broker: its result was lost"
    assert all(p.alive for p in stack.procs.values())
