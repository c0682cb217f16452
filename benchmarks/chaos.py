"""A randomized chaos soak on the network-namespace cluster (issue 14, item 3).

Phase 1, the soak. One cluster (``tests/cluster/hydra_cluster.py``: TLS Redis with ACLs, control,
intake, beat and webapp supervised with restart after 1 s; four enrolled volunteers, each in its own
namespace behind a fault proxy) with WAN links DSL, WAN100, SATELLITE and FLAKY (``faultproxy.PROFILES``:
bandwidth by ``tc tbf``, delay, jitter, stalls and resets by the proxy, or delay by netem where the
kernel has it). Undisturbed π and Mandelbrot runs on it first give the reference. Then ``--schedules``
seeded schedules (schedule *i* uses seed ``--seed + i``; ``--seed S --schedules 1`` replays the first
one): while one π job and one Mandelbrot job are kept in flight (a new one submitted as soon as one
ends), 1-3 faults drawn from the schedule's RNG are applied one after another:

* ``partition``  a volunteer's link down for a lease period plus 1-4 s, then healed;
* ``flap``       a volunteer's link down/up every 0.5-3 s for 6-14 s, ending up;
* ``kill-X``     kill -9 of X = control, beat, intake, webapp (while a volunteer sends 15 signed
                 transfers with ``tests/cluster/transfer_client.py``) or redis (restarted from its AOF);
                 the cluster's supervisor restarts the part after 1 s;
* ``leave``      a volunteer leaves for 5-12 s (worker kill -9 and link cut), then its link is healed and
                 its worker started again with the same credentials;
* ``half-leave`` two of the four volunteers leave at once, the same way, and come back;
* ``burst``      4-10 s of proxy faults on one volunteer's path: connection resets (RST) and 0.5-2.5 s
                 stalls every 0.5-2 s.

**Recovery** of a fault is measured from the moment it is *cleared* — link healed (partition, flap:
the last heal), part restarted (kill: the supervisor started the new process, for redis: it answers
PING), worker started again (leave, half-leave), end of the burst — until what it affected works again:

* volunteer faults (partition, flap, leave, half-leave, burst): the affected volunteer(s) merge a chunk
  of a running job again (for half-leave: both of them, i.e. the later one);
* kill of control, beat or intake: any chunk of a running job is merged again;
* kill of redis: every volunteer has merged a chunk again (the kombu reconnect trap: no restart);
* kill of the webapp: the transfer client's next transfer is applied by the ledger.

A volunteer that merges nothing within 30 s of a fault cleared, though jobs wait, has *stopped
consuming* (a Hydra bug): the benchmark starts its worker again at once (so the jobs and the next
faults are measured on a working cluster), and the schedule and a target fail.

Merges are seen by polling each running job's ``workers`` hash (``<worker>|last_ms``) every 0.2 s,
so a recovery is known to within ~0.2 s. The *outage* (from injection to recovery) is printed too.
After each schedule every job it started must finish with a result bit-identical to the reference
(π hits == ``compute.pi_hits``, Mandelbrot counts and PNG == the undisturbed run's), each chunk must be
paid exactly once (``hydra_cluster.mint_keys``), webapp transfers applied exactly once, and
``hydra ledger verify`` must pass.

Phase 2, throughput. A second cluster (same build, ``HYDRA_TARGET_CHUNK_S=3``): π jobs on all four
volunteers with every link set to LAN, then WAN100, DSL, SATELLITE, FLAKY, for ``--reps`` rounds;
throughput = samples / (finished_at - started_at) of the job; each profile's median is divided by
the LAN median.

Targets (each printed PASS/FAIL; exit status 0 only if all hold): >= 30 schedules, 100% of jobs
complete and bit-identical, 0 duplicate mints, verify passes after every schedule; median recovery
< 2 lease periods; WAN100 throughput >= 90% of LAN.

Run (root, iproute2, redis-server >= 7; takes ~35 min; nothing else should use the machine):
``.venv/bin/python benchmarks/chaos.py [--schedules 30] [--seed 1] [--reps 3] [--json FILE]``;
``--quick`` for a smoke run (3 schedules, 1 round; ~8 min). On a failure the cluster's logs are kept and
their directory is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

import redis  # noqa: E402

from hydra_tasks import compute, keys  # noqa: E402
from hydra_tasks.jobs import store  # noqa: E402
from hydra_tasks.jobs.submit import submit_job  # noqa: E402

import faultproxy  # noqa: E402
import hydra_cluster  # noqa: E402
import netns  # noqa: E402
from hydra_cluster import Cluster, mint_keys, restart_volunteer, set_link  # noqa: E402

VOLUNTEERS = ("v1", "v2", "v3", "v4")
SOAK_LINKS = {"v1": "DSL", "v2": "WAN100", "v3": "SATELLITE", "v4": "FLAKY"}
SOAK_OVERRIDES = dict(target_chunk_s=1.0, min_chunk_s=0.25)
THROUGHPUT_OVERRIDES = dict(target_chunk_s=3.0)
THROUGHPUT_PROFILES = ("LAN", "WAN100", "DSL", "SATELLITE", "FLAKY")
FAULT_KINDS = ("partition", "flap", "kill-control", "kill-beat", "kill-intake", "kill-webapp", "kill-redis",
               "leave", "half-leave", "burst")
RECOVERY_TIMEOUT_S = 30.0
JOB_TIMEOUT_S = 300.0
POLL_S = 0.2


def say(line: str) -> None:
    print(line, flush=True)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


# --- watching merges -----------------------------------------------------------------------------------------
class MergeLog:
    """Polls the ``workers`` hash of each watched job every POLL_S and records each new merge time per worker."""

    def __init__(self, cluster: Cluster) -> None:
        self.client = cluster.client()
        self.jobs: set[str] = set()
        self.events: list[tuple[float, str, str]] = []  # (merge time, worker id, job id)
        self._last: dict[tuple[str, str], str] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="merge-log", daemon=True)
        self._thread.start()

    def watch(self, job_id: str) -> None:
        with self._lock:
            self.jobs.add(job_id)

    def unwatch(self, job_id: str) -> None:
        with self._lock:
            self.jobs.discard(job_id)

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            with self._lock:
                jobs = list(self.jobs)
            for job_id in jobs:
                try:
                    fields = self.client.hgetall(keys.job_workers(job_id))
                except redis.RedisError:
                    continue
                for name, value in fields.items():
                    worker, _, what = str(name).rpartition("|")
                    if what != "last_ms" or self._last.get((job_id, worker)) == value:
                        continue
                    self._last[(job_id, worker)] = value
                    with self._lock:
                        self.events.append((int(value) / 1000.0, worker, job_id))

    def first_after(self, t: float, worker: str | None = None) -> float | None:
        with self._lock:
            times = [e[0] for e in self.events if e[0] >= t and (worker is None or e[1] == worker)]
        return min(times) if times else None

    def wait_merge(self, t: float, workers: list[str] | None, *, timeout_s: float = RECOVERY_TIMEOUT_S) -> float | None:
        """Seconds from ``t`` until each of ``workers`` (None: anyone) merged a chunk at or after ``t``
        (the latest of them); None if that did not happen within ``timeout_s``."""
        deadline = time.time() + timeout_s
        while True:
            found = [self.first_after(t, w) for w in (workers or [None])]  # type: ignore[list-item]
            if all(f is not None for f in found):
                return max(f for f in found if f is not None) - t
            if time.time() > deadline:
                return None
            time.sleep(POLL_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --- keeping jobs in flight ------------------------------------------------------------------------------------
class JobRunner:
    """Keeps one π and one Mandelbrot job in flight until :meth:`stop`; records every job it started."""

    def __init__(self, cluster: Cluster, specs: dict[str, dict[str, Any]], merges: MergeLog) -> None:
        self.app, self.specs, self.merges = cluster.app(), specs, merges
        self.started: list[tuple[str, str]] = []  # (kind, job id)
        self.submit_errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-runner", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        current: dict[str, str | None] = {kind: None for kind in self.specs}
        while not self._stop.is_set():
            for kind, spec in self.specs.items():
                job_id = current[kind]
                try:
                    if job_id is not None and store.get_job(self.app.redis, job_id).is_final:
                        self.merges.unwatch(job_id)
                        job_id = current[kind] = None
                    if job_id is None and not self._stop.is_set():
                        view = submit_job(self.app, spec)
                        current[kind] = view.id
                        self.started.append((kind, view.id))
                        self.merges.watch(view.id)
                except Exception:  # noqa: BLE001 - Redis is down for a moment (kill-redis): try again
                    self.submit_errors += 1
            self._stop.wait(POLL_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# --- the faults ----------------------------------------------------------------------------------------------
@dataclass
class Fault:
    kind: str
    target: str
    injected: float
    cleared: float = 0.0
    recovery_s: float | None = None
    outage_s: float | None = None
    note: str = ""
    ok: bool = True   # its own checks (the transfers of kill-webapp) held
    stuck: list[str] = field(default_factory=list)  # volunteers that merged nothing within RECOVERY_TIMEOUT_S

    def label(self) -> str:
        rec = "TIMEOUT" if self.recovery_s is None else f"{self.recovery_s:.1f}s"
        return f"{self.kind}({self.target}) rec {rec}"


class Chaos:
    def __init__(self, cluster: Cluster, merges: MergeLog, rng: random.Random) -> None:
        self.c, self.merges, self.rng = cluster, merges, rng
        self.client = cluster.client()
        assert cluster.stack is not None and cluster.net is not None
        self.lease_s = cluster.stack.settings.lease_s
        self.net = cluster.net

    def wid(self, name: str) -> str:
        return self.c.volunteers[name].worker_id

    def run(self, kind: str) -> Fault:
        return getattr(self, "f_" + kind.replace("-", "_"))()

    def _recover(self, fault: Fault, names: list[str] | None) -> Fault:
        """Wait until each of the volunteers ``names`` (None: anyone) merged a chunk after the fault was cleared."""
        workers = [self.wid(n) for n in names] if names is not None else None
        fault.recovery_s = self.merges.wait_merge(fault.cleared, workers)
        if fault.recovery_s is not None:
            fault.outage_s = fault.cleared + fault.recovery_s - fault.injected
        else:
            # A volunteer that merged nothing within RECOVERY_TIMEOUT_S of the fault cleared, though jobs
            # were waiting, stopped consuming: a Hydra bug to report. Its worker is started again at once
            # so that the jobs and the next faults are measured on a working cluster; the schedule fails.
            fault.stuck = [n for n in (names or []) if self.merges.first_after(fault.cleared, self.wid(n)) is None]
            for name in fault.stuck:
                restart_volunteer(self.c, name)
        return fault

    def f_partition(self) -> Fault:
        name = self.rng.choice(VOLUNTEERS)
        hold = self.lease_s + self.rng.uniform(1.0, 4.0)
        f = Fault("partition", name, time.time(), note=f"cut {hold:.1f}s")
        self.net.partition(name)
        time.sleep(hold)
        self.net.heal(name)
        f.cleared = time.time()
        return self._recover(f, [name])

    def f_flap(self) -> Fault:
        name = self.rng.choice(VOLUNTEERS)
        span = self.rng.uniform(6.0, 14.0)
        f = Fault("flap", name, time.time())
        flaps = 0
        while time.time() - f.injected < span:
            self.net.partition(name)
            time.sleep(self.rng.uniform(0.5, 3.0))
            self.net.heal(name)
            flaps += 1
            time.sleep(self.rng.uniform(0.5, 3.0))
        f.cleared = time.time()
        f.note = f"{flaps} flaps in {f.cleared - f.injected:.1f}s"
        return self._recover(f, [name])

    def _kill_part(self, part: str) -> Fault:
        f = Fault(f"kill-{part}", part, time.time())
        seen = len(self.c.events)
        self.c.kill(part)
        if part == "redis":
            self.c.wait_restarted("redis", timeout_s=60)
        else:
            deadline = time.monotonic() + 60
            assert self.c.stack is not None
            while not (self.c.stack.procs[part].alive
                       and any(f"{part} restarted" in e for e in self.c.events[seen:])):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{part} was not restarted within 60 s: {self.c.events[-5:]}")
                time.sleep(0.05)
        f.cleared = time.time()
        return f

    def f_kill_control(self) -> Fault:
        return self._recover(self._kill_part("control"), None)

    def f_kill_beat(self) -> Fault:
        return self._recover(self._kill_part("beat"), None)

    def f_kill_intake(self) -> Fault:
        return self._recover(self._kill_part("intake"), None)

    def f_kill_redis(self) -> Fault:
        return self._recover(self._kill_part("redis"), list(VOLUNTEERS))

    def _transfers(self) -> int:
        return int(self.client.hget(keys.LEDGER_STATS, "transfers") or 0)

    def f_kill_webapp(self) -> Fault:
        assert self.c.stack is not None
        balances = {n: int(self.client.hget(keys.LEDGER_BALANCES, self._account(n)) or 0) for n in VOLUNTEERS}
        names = sorted(VOLUNTEERS, key=lambda n: -balances[n])
        sender, recipient = self.c.volunteers[names[0]], self.c.volunteers[names[1]]
        count, amount = 15, 1
        if balances[sender.name] < count * amount:
            f = Fault("kill-webapp", "webapp", time.time(), note="no volunteer has earned enough to send; killed anyway")
            return self._webapp_alone(f)
        argv = sender.host.argv([sys.executable, str(ROOT / "tests" / "cluster" / "transfer_client.py"),
                                 self.c.stack.web_url, str(sender.data_dir / "volunteer-ca.pem"),
                                 str(sender.data_dir / "worker.key"), self._account(recipient.name), str(count),
                                 str(amount)])
        before = self._transfers()
        client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")})
        deadline = time.monotonic() + 60
        while self._transfers() == before and client.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        f = self._kill_part("webapp")
        f.target = f"webapp, {sender.name}->{recipient.name}"
        landed = self._transfers()
        t_next = None
        while client.poll() is None or self._transfers() > landed:
            if self._transfers() > landed:
                t_next = time.time()
                break
            if time.time() - f.cleared > RECOVERY_TIMEOUT_S:
                break
            time.sleep(0.02)
        out, err = client.communicate(timeout=240)
        if t_next is not None:
            f.recovery_s = t_next - f.cleared
            f.outage_s = t_next - f.injected
        else:
            f.note = f"no transfer was pending after the restart ({landed - before} of {count} before)"
            f.recovery_s = None
        try:
            report = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            report = {"errors": [f"no report; exit {client.returncode}: {err[-500:]}"]}
        moved = self._transfers() - before
        if client.returncode != 0 or report.get("errors") or moved != count:
            f.ok = False
            f.note += f" TRANSFERS WRONG: applied {moved} of {count}, client {report}"
        else:
            f.note += f" {count} transfers applied once ({report.get('retries', 0)} retries, " \
                      f"{report.get('repeated', 0)} already applied)"
        if t_next is None and f.ok and landed - before == count:
            f.recovery_s = 0.0  # nothing was waiting for the webapp: it had no outage to recover from
        return f

    def _webapp_alone(self, f: Fault) -> Fault:
        g = self._kill_part("webapp")
        g.note = f.note
        g.recovery_s = 0.0
        return g

    def _account(self, name: str) -> str:
        return str(self.client.hget(keys.worker(self.wid(name)), "public_key"))

    def _leave_and_return(self, kind: str, names: list[str]) -> Fault:
        hold = self.rng.uniform(5.0, 12.0)
        f = Fault(kind, ",".join(names), time.time(), note=f"away {hold:.1f}s")
        for name in names:
            self.c.leave(name)
        time.sleep(hold)
        for name in names:
            self.net.heal(name)
            restart_volunteer(self.c, name)
        f.cleared = time.time()
        return self._recover(f, names)

    def f_leave(self) -> Fault:
        return self._leave_and_return("leave", [self.rng.choice(VOLUNTEERS)])

    def f_half_leave(self) -> Fault:
        return self._leave_and_return("half-leave", sorted(self.rng.sample(VOLUNTEERS, len(VOLUNTEERS) // 2)))

    def f_burst(self) -> Fault:
        name = self.rng.choice(VOLUNTEERS)
        span = self.rng.uniform(4.0, 10.0)
        proxy = self.c.proxy(name)
        f = Fault("burst", name, time.time())
        resets = stalls = 0
        stall_end = f.injected
        while time.time() - f.injected < span:
            if self.rng.random() < 0.5:
                resets += proxy.reset_all()
            else:
                s = self.rng.uniform(0.5, 2.5)
                proxy.stall(s)
                stalls += 1
                stall_end = max(stall_end, time.time() + s)
            time.sleep(self.rng.uniform(0.5, 2.0))
        time.sleep(max(0.0, stall_end - time.time()))
        f.cleared = time.time()
        f.note = f"{resets} connections reset, {stalls} stalls in {f.cleared - f.injected:.1f}s"
        return self._recover(f, [name])


# --- checks ----------------------------------------------------------------------------------------------------
@dataclass
class Reference:
    specs: dict[str, dict[str, Any]]
    pi_hits: int
    counts: bytes
    image: bytes


def _bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value or b"")


def make_specs() -> dict[str, dict[str, Any]]:
    """A π job and a Mandelbrot job of a few seconds of this machine's two cores each (as the fault tests)."""
    t = time.perf_counter()
    compute.pi_hits(1, 0, 50_000_000)
    rate = 50_000_000 / (time.perf_counter() - t)
    samples = max(int(rate * 2 * 2 / 1e8) * 100_000_000, 1_000_000_000)
    return {"pi": {"kind": "pi", "params": {"samples": samples, "seed": 20261202}},
            "mandelbrot": {"kind": "mandelbrot", "params": {"width": 480, "height": 320, "max_iter": 3000,
                                                             "center_x": -0.745, "center_y": 0.11, "span": 0.06}}}


def wait_final(cluster: Cluster, job_id: str, timeout_s: float) -> Any:
    client = cluster.client()
    deadline = time.time() + timeout_s
    while True:
        try:
            job = store.get_job(client, job_id)
            if job.is_final or time.time() > deadline:
                return job
        except redis.RedisError:
            if time.time() > deadline:
                raise
        time.sleep(0.5)


def reference_runs(cluster: Cluster) -> Reference:
    from hydra_tasks.jobs.mandelbrot import decode_counts

    specs = make_specs()
    app = cluster.app()
    pi_job = wait_final(cluster, submit_job(app, specs["pi"]).id, JOB_TIMEOUT_S)
    m_job = wait_final(cluster, submit_job(app, specs["mandelbrot"]).id, JOB_TIMEOUT_S)
    if pi_job.state != "done" or m_job.state != "done":
        raise RuntimeError(f"the undisturbed runs did not finish: {pi_job.state}, {m_job.state}")
    hits = compute.pi_hits(specs["pi"]["params"]["seed"], 0, specs["pi"]["params"]["samples"])
    if pi_job.result["hits"] != hits:
        raise RuntimeError(f"the undisturbed π run is wrong: {pi_job.result['hits']} != {hits}")
    client = cluster.client()
    counts, image = _bytes(client.get(keys.job_counts(m_job.id))), _bytes(client.get(keys.job_image(m_job.id)))
    p = store.get_job(client, m_job.id).params
    whole = compute.mandelbrot_counts(xmin=p["xmin"], ymax=p["ymax"], dx=p["dx"], dy=p["dy"], col0=0, row0=0,
                                      width=p["width"], height=p["height"], max_iter=p["max_iter"])
    if not (decode_counts(counts.decode(), p["height"], p["width"]) == whole).all():
        raise RuntimeError("the undisturbed Mandelbrot run differs from the kernel called directly")
    say(f"reference: π {specs['pi']['params']['samples']:,} samples in "
        f"{(pi_job.finished_at or 0) - pi_job.created_at:.1f}s, Mandelbrot 480x320 in "
        f"{(m_job.finished_at or 0) - m_job.created_at:.1f}s (undisturbed, same cluster)")
    return Reference(specs, hits, counts, image)


@dataclass
class ScheduleResult:
    index: int
    seed: int
    faults: list[Fault] = field(default_factory=list)
    started: int = 0
    completed: int = 0
    identical: int = 0
    duplicate_mints: int = 0
    unmerged_paid: int = 0
    verify_ok: bool = False
    problems: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)  # stuck volunteers the benchmark restarted
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (self.started > 0 and self.completed == self.started and self.identical == self.started
                and self.duplicate_mints == 0 and self.unmerged_paid == 0 and self.verify_ok
                and all(f.ok for f in self.faults) and not self.restarted)


def check_jobs(cluster: Cluster, ref: Reference, started: list[tuple[str, str]], res: ScheduleResult) -> None:
    client = cluster.client()
    res.started = len(started)
    for kind, job_id in started:
        job = wait_final(cluster, job_id, JOB_TIMEOUT_S)
        if job.state != "done":
            res.problems.append(f"{kind} job {job_id} ended {job.state} ({job.error}) "
                                f"{job.chunks_done}/{job.chunks_total} chunks")
            continue
        res.completed += 1
        if kind == "pi":
            same = job.result["hits"] == ref.pi_hits
        else:
            same = (_bytes(client.get(keys.job_counts(job_id))) == ref.counts
                    and _bytes(client.get(keys.job_image(job_id))) == ref.image)
        if same:
            res.identical += 1
        else:
            res.problems.append(f"{kind} job {job_id} differs from the reference")
        minted = mint_keys(client, job_id)
        twice = {k: n for k, n in minted.items() if n != 1}
        res.duplicate_mints += sum(max(n - 1, 0) for n in twice.values())
        if twice:
            res.problems.append(f"{kind} job {job_id}: chunks paid other than once: {twice}")
        paid = {k.split(":", 1)[1] for k in minted}
        # Merged: the done set while the job runs; once it ended (and FINISH compacted it), its chunk log.
        merged = (set(client.smembers(keys.job_done(job_id))) | {c for c in paid if c.startswith("a")}
                  | {json.loads(e)["chunk"] for e in client.lrange(keys.job_log(job_id), 0, -1)})
        if paid - merged:
            res.unmerged_paid += len(paid - merged)
            res.problems.append(f"{kind} job {job_id}: paid but never merged: {sorted(paid - merged)[:5]}")
    done = cluster.hydra_cli("ledger", "verify", timeout_s=180)
    res.verify_ok = done.returncode == 0
    if not res.verify_ok:
        res.problems.append(f"hydra ledger verify failed: {(done.stdout + done.stderr)[-600:]}")


def run_schedule(cluster: Cluster, ref: Reference, merges: MergeLog, index: int, seed: int) -> ScheduleResult:
    rng = random.Random(seed)
    res = ScheduleResult(index, seed)
    t0 = time.time()
    cluster.wait_for_volunteers(VOLUNTEERS, timeout_s=120)
    runner = JobRunner(cluster, ref.specs, merges)
    chaos = Chaos(cluster, merges, rng)
    try:
        if merges.wait_merge(time.time(), None, timeout_s=60) is None:  # faults hit running jobs
            res.problems.append("no chunk was merged within 60 s of the schedule's start")
        for n in range(rng.randint(1, 3)):
            kind = rng.choice(FAULT_KINDS)
            try:
                fault = chaos.run(kind)
            except Exception as exc:  # noqa: BLE001 - the benchmark goes on; the schedule fails
                fault = Fault(kind, "?", time.time(), ok=False, note=f"could not apply: {exc!r}")
            res.faults.append(fault)
            time.sleep(rng.uniform(1.0, 3.0))
    finally:
        for fault in res.faults:
            for name in fault.stuck:
                res.problems.append(f"{name} stopped consuming after {fault.kind} (no merge within "
                                    f"{RECOVERY_TIMEOUT_S:g}s); its worker was restarted by the benchmark; "
                                    f"logs: {cluster.data_dir / 'logs' / f'worker-{name}.log'}")
                res.restarted.append(name)
        runner.stop()
        for name in VOLUNTEERS:  # whatever happened, every volunteer is back for the next schedule
            if cluster.net is not None and cluster.net.hosts[name].down:
                cluster.net.heal(name)
            assert cluster.stack is not None
            if not cluster.stack.procs[f"worker-{name}"].alive:
                restart_volunteer(cluster, name)
    if runner.submit_errors:
        res.problems.append(f"({runner.submit_errors} submit attempts failed during faults; retried)")
    check_jobs(cluster, ref, runner.started, res)
    for _, job_id in runner.started:
        merges.unwatch(job_id)
    res.seconds = time.time() - t0
    return res


# --- throughput --------------------------------------------------------------------------------------------------
def throughput(data_dir: Path, reps: int, job_s: float, netem: bool) -> dict[str, Any]:
    t = time.perf_counter()
    compute.pi_hits(1, 0, 50_000_000)
    rate = 50_000_000 / (time.perf_counter() - t)
    samples = max(int(rate * 2 * job_s / 1e8) * 100_000_000, 1_000_000_000)
    runs: dict[str, list[float]] = {p: [] for p in THROUGHPUT_PROFILES}
    data_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(data_dir, VOLUNTEERS, overrides=THROUGHPUT_OVERRIDES)
    try:
        cluster.start()
        app = cluster.app()
        say(f"\nthroughput: π jobs of {samples:,} samples, HYDRA_TARGET_CHUNK_S=3, 4 volunteers, "
            f"{reps} round(s) of {', '.join(THROUGHPUT_PROFILES)} on every link")
        for seed in (7, 8):  # warm-up: the chunk sizing learns each worker's speed
            wait_final(cluster, submit_job(app, {"kind": "pi", "params": {"samples": samples // 2, "seed": seed}}).id,
                       JOB_TIMEOUT_S)
        for rep in range(reps):
            for prof in THROUGHPUT_PROFILES:
                profile = faultproxy.PROFILES[prof]
                for i, name in enumerate(VOLUNTEERS):
                    set_link(cluster, name, profile, seed=zlib.crc32(f"{prof}{rep}{name}".encode()), netem=netem)
                cluster.wait_for_volunteers(VOLUNTEERS, timeout_s=120)
                job = wait_final(cluster, submit_job(app, {"kind": "pi", "params": {"samples": samples,
                                                                                    "seed": 100 + rep}}).id,
                                 JOB_TIMEOUT_S)
                if job.state != "done":
                    raise RuntimeError(f"throughput job under {prof} ended {job.state}: {job.error}")
                took = (job.finished_at or 0) - (job.started_at or job.created_at)
                runs[prof].append(samples / took)
                chunk_s = sum(w.elapsed_ms for w in job.workers.values()) / 1000 / max(job.chunks_done, 1)
                say(f"  round {rep + 1} {prof:<9} {took:6.1f}s  {samples / took / 1e6:8.1f} M samples/s  "
                    f"({job.chunks_total} chunks, {chunk_s:.1f}s of compute each on average)")
    except BaseException:
        cluster.dump_logs()
        raise
    finally:
        cluster.stop()
    lan = statistics.median(runs["LAN"])
    return {"samples": samples, "runs": runs,
            "relative": {p: statistics.median(v) / lan for p, v in runs.items()},
            "describe": {p: faultproxy.PROFILES[p].describe() for p in THROUGHPUT_PROFILES}}


# --- main --------------------------------------------------------------------------------------------------------
def secs(value: float | None) -> str:
    return "-" if value is None else ("timeout" if value == float("inf") else f"{value:.1f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--schedules", type=int, default=30, help="seeded schedules in the soak (default 30)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first schedule (default 1)")
    parser.add_argument("--reps", type=int, default=3, help="rounds of the throughput runs (default 3)")
    parser.add_argument("--job-s", type=float, default=25.0,
                        help="size of a throughput job in seconds of two cores (default 25)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 schedules, 1 round")
    parser.add_argument("--no-throughput", action="store_true", help="skip phase 2")
    parser.add_argument("--no-soak", action="store_true", help="skip phase 1")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.schedules, args.reps = 3, 1
    reason = hydra_cluster.unavailable()
    if reason:
        say(f"chaos: cannot run here: {reason}")
        return 2
    netem = netns.has_netem()
    say(f"CPU: {cpu_name()}; Python {platform.python_version()}; netem: {'yes' if netem else 'no (delay and jitter by the fault proxy)'}")
    base = Path(tempfile.mkdtemp(prefix="hydra-chaos-"))
    results: list[ScheduleResult] = []
    ref: Reference | None = None
    lease_s = 0.0
    keep = False
    t_start = time.time()
    if not args.no_soak:
        (base / "soak").mkdir()
        cluster = Cluster(base / "soak", VOLUNTEERS, overrides=SOAK_OVERRIDES)
        try:
            t = time.time()
            cluster.start()
            assert cluster.stack is not None
            lease_s = cluster.stack.settings.lease_s
            for name, prof in SOAK_LINKS.items():
                set_link(cluster, name, faultproxy.PROFILES[prof], seed=zlib.crc32(name.encode()), netem=netem)
            say(f"cluster up in {time.time() - t:.0f}s; lease {lease_s:g}s; links " +
                ", ".join(f"{n} {p} ({faultproxy.PROFILES[p].describe()})" for n, p in SOAK_LINKS.items()))
            ref = reference_runs(cluster)
            merges = MergeLog(cluster)
            say(f"\n{'#':>3} {'seed':>6} {'jobs ok':>8} {'verify':>6} {'dup':>3} {'time':>5}  faults (recovery)")
            for i in range(args.schedules):
                res = run_schedule(cluster, ref, merges, i, args.seed + i)
                results.append(res)
                say(f"{i + 1:>3} {res.seed:>6} {res.identical:>3}/{res.started:<4} "
                    f"{'ok' if res.verify_ok else 'FAIL':>6} {res.duplicate_mints:>3} {res.seconds:>4.0f}s  "
                    + "; ".join(f.label() for f in res.faults) + ("" if res.ok else "  << FAILED"))
                for f in res.faults:
                    if f.note:
                        say(f"{'':>29}{f.kind}: {f.note}")
                for p in res.problems:
                    say(f"{'':>29}! {p}")
                if not res.ok:
                    keep = True
            merges.stop()
        except BaseException:
            keep = True
            cluster.dump_logs()
            raise
        finally:
            cluster.stop()
    tput: dict[str, Any] | None = None
    if not args.no_throughput:
        tput = throughput(base / "throughput", args.reps, 10.0 if args.quick else args.job_s, netem)

    # --- the summary
    say(f"\n=== chaos soak: {len(results)} schedules, seeds {args.seed}..{args.seed + len(results) - 1}, "
        f"{(time.time() - t_start) / 60:.1f} min; CPU {cpu_name()} ===")
    targets: list[tuple[str, bool]] = []
    summary: dict[str, Any] = {"cpu": cpu_name(), "netem": netem, "links": SOAK_LINKS, "lease_s": lease_s}
    if not args.no_soak:
        started = sum(r.started for r in results)
        completed = sum(r.completed for r in results)
        identical = sum(r.identical for r in results)
        dups = sum(r.duplicate_mints for r in results)
        verified = sum(r.verify_ok for r in results)
        faults = [f for r in results for f in r.faults]
        recs = [f.recovery_s for f in faults if f.recovery_s is not None]
        timeouts = [f for f in faults if f.recovery_s is None]
        stuck = sum(len(r.restarted) for r in results)
        say(f"jobs completed / started: {completed}/{started}; bit-identical to the reference: {identical}/{started}")
        say(f"duplicate mints: {dups}; ledger verify passed after {verified}/{len(results)} schedules")
        say(f"faults: {len(faults)}; recovered: {len(recs)}; no recovery within {RECOVERY_TIMEOUT_S:g}s: "
            f"{len(timeouts)}; volunteers that stopped consuming (restarted by the benchmark): {stuck}")
        say("recovery (from the fault cleared until the affected volunteer / job merges a chunk again;"
            " webapp: the next transfer applied):")
        say(f"  {'fault':<12} {'n':>3} {'median':>7} {'max':>7} {'median outage':>14}")
        by_kind: dict[str, Any] = {}
        for kind in FAULT_KINDS:
            of = [f for f in faults if f.kind == kind]
            if not of:
                continue
            r = [f.recovery_s for f in of if f.recovery_s is not None]
            o = [f.outage_s for f in of if f.outage_s is not None]
            by_kind[kind] = {"n": len(of), "median_s": statistics.median(r) if r else None,
                             "max_s": max(r) if r else None, "timeouts": len(of) - len(r),
                             "median_outage_s": statistics.median(o) if o else None}
            rr = [f.recovery_s if f.recovery_s is not None else float("inf") for f in of]
            say(f"  {kind:<12} {len(of):>3} {secs(statistics.median(rr)):>7} {secs(max(rr)):>7} "
                f"{secs(statistics.median(o) if o else None):>14}"
                + (f"  ({len(of) - len(r)} without recovery)" if len(of) > len(r) else ""))
        all_recs = [f.recovery_s if f.recovery_s is not None else float("inf") for f in faults]
        med = statistics.median(all_recs) if all_recs else float("inf")
        say(f"  {'all':<12} {len(faults):>3} {secs(med):>7} {secs(max(all_recs) if all_recs else None):>7}")
        summary.update(jobs_started=started, jobs_completed=completed, jobs_identical=identical,
                       duplicate_mints=dups, verify_passed=verified, recovery_by_kind=by_kind,
                       recovery_median_s=med, schedules=[{**{k: v for k, v in asdict(r).items()},
                                                          "ok": r.ok} for r in results])
        targets += [
            (f"soak of >= 30 schedules ({len(results)})", len(results) >= 30),
            (f"100% of jobs complete ({completed}/{started})", started > 0 and completed == started),
            (f"100% bit-identical to the reference ({identical}/{started})", started > 0 and identical == started),
            (f"0 duplicate mints ({dups})", dups == 0 and not any(r.unmerged_paid for r in results)),
            (f"hydra ledger verify passes after every schedule ({verified}/{len(results)})",
             bool(results) and verified == len(results)),
            ("every fault's own checks hold (transfers applied exactly once)", all(f.ok for f in faults)),
            (f"every volunteer consumes again after every fault, unrestarted ({stuck} stopped)", stuck == 0),
            (f"median recovery < 2 lease periods ({med:.1f}s < {2 * lease_s:g}s)", med < 2 * lease_s),
        ]
    if tput is not None:
        say("\nthroughput of 3 s chunks relative to LAN (medians; same script, same cluster build):")
        for p in THROUGHPUT_PROFILES:
            v = tput["runs"][p]
            say(f"  {p:<9} {statistics.median(v) / 1e6:8.1f} M samples/s  {tput['relative'][p]:6.1%}   "
                f"{tput['describe'][p]}")
        summary["throughput"] = tput
        rel = tput["relative"]["WAN100"]
        targets.append((f"WAN100 throughput >= 90% of LAN ({rel:.1%}, {args.reps} round(s))", rel >= 0.90))
    say("\ntargets:")
    for text, ok in targets:
        say(f"  {'PASS' if ok else 'FAIL'}  {text}")
    summary["targets"] = [{"target": t, "pass": ok} for t, ok in targets]
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str))
        say(f"results written to {args.json}")
    if keep:
        say(f"cluster logs kept in {base} (soak/logs/)")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if targets and all(ok for _, ok in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
