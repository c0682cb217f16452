"""Cheating volunteers against Hydra's exact spot checks, audit chunks and consequences (issue 12),
with real workers.

One real local stack (embedded Redis, control and intake workers, two honest workers) serves the
whole run. The honest workers first earn their standing on a warm-up job, as long-time volunteers
would have (``--veteran`` clean audits each), so they audit others and are themselves audited at the
veterans' rate. Then, for every kind of cheat and every seeded run, a fresh cheater (or pair) joins
with a new name and key (benchmarks/cheater_worker.py: the real Celery worker with its kernel
replaced; it signs its own results), a job runs to the end, and the cheater leaves. Per kind it
prints: runs in which every cheater was caught, results accepted from it before the catch (median
and max), wrong values in the final outputs (π hits against the kernel; Mandelbrot pixels against
the whole image rendered here), and tokens kept against tokens claimed (what its results would have
earned at the honest workers' pay per result). Then the verification overhead, work recomputed by
checks and audit chunks / useful work (all runs; and an honest-only job), next to BOINC-style 2x
replication, run here: the same honest job submitted twice at once, every chunk computed twice.

``--sim-runs M`` adds, for the detection rate, M seeded runs per kind with the real control plane
(the same collect, dispatch and Lua code on a real Redis) driven in this process: the workers are
simulated by calling the real kernels (and the same cheats) directly, on small jobs (25 π chunks of
2·10⁶ samples, 150 for pi-tenth, which cheats on one chunk in ten; a 192x144 image), since how likely
a catch is depends on the share of each result audited, not on the chunk's size.

Run: `.venv/bin/python benchmarks/cheaters.py [--runs N] [--sim-runs M] [--kinds a,b] [--veteran K]`.
Targets (issue 12): every cheater caught in >= 99% of runs, 0 wrong values in any final output,
overhead <= 5% (replication: 100%), cheaters keep <= 1% of what they claimed.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

from hydra_tasks import compute as kernels  # noqa: E402
from hydra_tasks import keys  # noqa: E402
from hydra_tasks.celery_app import HydraCelery, create_app  # noqa: E402
from hydra_tasks.jobs import mandelbrot  # noqa: E402
from hydra_tasks.jobs.submit import submit_job  # noqa: E402
from hydra_tasks.jobs.view import JobView  # noqa: E402
from hydra_tasks.ledger import audit as ledger_audit  # noqa: E402
from hydra_tasks.ledger.book import MICRO_PER_TOKEN  # noqa: E402
from hydra_tasks.stack import LocalStack  # noqa: E402
from hydra_tasks.worker import registry  # noqa: E402
from support import dispatch_in_process, running_stack, wait_for_job  # noqa: E402

KINDS = {  # cheat -> (job kind, the cheater_worker cheat, how many cheating workers)
    "pi-all": ("pi", "pi-all", 1), "pi-tenth": ("pi", "pi-tenth", 1), "pi-one-block": ("pi", "pi-one-block", 1),
    "fast-clock": ("pi", "fast-clock", 1), "colluding-pair": ("pi", "pi-colluding", 2),
    "mandel-1pct": ("mandelbrot", "mandel-1pct", 1), "mandel-upscaled": ("mandelbrot", "mandel-upscaled", 1),
}
PI_SAMPLES = 6_000_000_000
MANDEL_JOB = {"kind": "mandelbrot", "params": {"width": 1200, "height": 900, "max_iter": 3_000,
                                               "center_x": -0.7435, "center_y": 0.1314, "span": 0.004}}
CHUNK_S = 0.25  # HYDRA_TARGET_CHUNK_S: many results per run


def cheater_argv(cheat: str, name: str) -> list[str]:
    return [sys.executable, str(ROOT / "benchmarks" / "cheater_worker.py"), cheat, "-Q", "hydra.region.eu-west",
            "-n", f"{name}@%h", "-c", "1", "--loglevel", "INFO", "--without-mingle", "--without-gossip"]


_reference: dict[str, np.ndarray] = {}


def wrong_values(app: HydraCelery, job: JobView) -> int:
    p = job.params
    if job.kind.value == "pi":
        return int(job.result is None or job.result["hits"] != kernels.pi_hits(int(p["seed"]), 0, int(p["samples"])))
    got = mandelbrot.decode_counts(app.redis.get(keys.job_counts(job.id)), int(p["height"]), int(p["width"]))
    if job.id not in _reference:
        _reference.clear()
        _reference[job.id] = kernels.mandelbrot_counts(
            xmin=float(p["xmin"]), ymax=float(p["ymax"]), dx=float(p["dx"]), dy=float(p["dy"]), col0=0, row0=0,
            width=int(p["width"]), height=int(p["height"]), max_iter=int(p["max_iter"]))
    return int(np.count_nonzero(got != _reference[job.id]))


def audit_work(app: HydraCelery) -> int:
    """Work recomputed by checks so far: on the control plane and by audit chunks (π samples and
    Mandelbrot pixels, each against its own kind's useful work)."""
    checks = app.redis.hgetall(keys.SPOT_CHECKS)
    return sum(int(v) for k, v in checks.items() if k.startswith(("units:", "remote:")))


def pay_per_result(app: HydraCelery, job: JobView, honest: list[str]) -> float:
    """Tokens the honest workers earned per merged result in this job."""
    paid = results = 0
    for _, f in ledger_audit.journal(app.redis):
        if f.get("type") == "mint" and f["key"].startswith(job.id + ":") and not f["key"].split(":")[1].startswith("a"):
            paid += int(f["amount"])
            results += 1
    return paid / results / MICRO_PER_TOKEN if results else 0.0


def warm_up(app: HydraCelery, honest: list[str], veteran: int) -> float:
    """Run π jobs until every honest worker has ``veteran`` clean audits; returns the seconds it took."""
    t0 = time.perf_counter()
    while True:
        reps = [registry.get_worker(app.redis, w) for w in honest]
        if all(w is not None and w.reputation >= veteran for w in reps):
            return time.perf_counter() - t0
        wait_for_job(app, submit_job(app, {"kind": "pi", "params": {"samples": 40_000_000_000}}).id, timeout_s=900)


def run_once(stack: LocalStack, app: HydraCelery, cheat: str, run: int, honest: list[str]) -> dict[str, Any]:
    kind, worker_cheat, count = KINDS[cheat]
    names = [f"{cheat.replace('-', '')}{run}x{i}" for i in range(count)]
    before = len(registry.list_workers(app.redis))
    for name in names:
        stack.spawn(name, cheater_argv(worker_cheat, name),
                    env={"HYDRA_KEY_FILE": str(stack.settings.data_dir / "keys" / f"{name}.key")})
    stack.wait_until("the cheaters to register", lambda: len(registry.list_workers(app.redis)) >= before + count,
                     timeout_s=120)
    audit0 = audit_work(app)
    spec = {"kind": "pi", "params": {"samples": PI_SAMPLES, "seed": 1_000 + run}} if kind == "pi" else MANDEL_JOB
    job = wait_for_job(app, submit_job(app, spec).id, timeout_s=900)
    out: dict[str, Any] = {"wrong": wrong_values(app, job), "caught": 0, "count": count, "accepted": [],
                           "kept": 0.0, "sent": 0, "audit": audit_work(app) - audit0, "useful": job.units_total,
                           "kind": kind}
    for name in names:
        (w,) = [w for w in registry.list_workers(app.redis) if w.worker_id.startswith(name + "@")]
        out["caught"] += bool(w.quarantined)
        out["accepted"].append(w.chunks_done)
        out["kept"] += int(app.redis.hget(keys.LEDGER_BALANCES, w.public_key) or 0) / MICRO_PER_TOKEN
        out["sent"] += len(re.findall(r"Task hydra\.compute_chunk\[[^\]]+\] succeeded",
                                      stack.procs[name].log_path.read_text(errors="replace")))
        stack.kill(name, 15)
        stack.procs.pop(name).popen.wait(timeout=60)  # gone for good: the stack must not wait on it
    out["claimed"] = out["sent"] * pay_per_result(app, job, honest)
    return out


def replication(app: HydraCelery) -> tuple[float, float, float]:
    """(one honest π job's wall time, the same job twice at once: BOINC-style 2x replication, the
    audit work / useful work of the single job) from one interleaved pair of measurements each."""
    spec = {"kind": "pi", "params": {"samples": PI_SAMPLES, "seed": 77}}
    singles, doubles, audits = [], [], []
    for _ in range(3):
        a0, t0 = audit_work(app), time.perf_counter()
        wait_for_job(app, submit_job(app, spec).id, timeout_s=900)
        singles.append(time.perf_counter() - t0)
        audits.append((audit_work(app) - a0) / PI_SAMPLES)
        t0 = time.perf_counter()
        ids = [submit_job(app, spec).id, submit_job(app, spec).id]
        for job_id in ids:
            wait_for_job(app, job_id, timeout_s=900)
        doubles.append(time.perf_counter() - t0)
    return statistics.median(singles), statistics.median(doubles), statistics.median(audits)


SIM_PI = {"kind": "pi", "params": {"samples": 50_000_000}}
SIM_PI_LONG = 300_000_000  # pi-tenth cheats on one chunk in ten: its run must give it ~50 chunks to cheat on
SIM_MANDEL = {"kind": "mandelbrot", "params": {"width": 192, "height": 144, "max_iter": 500,
                                               "center_x": -0.7435, "center_y": 0.1314, "span": 0.02}}


def simulate(cheat: str, runs: int, tmp: Path) -> dict[str, Any]:
    """``runs`` seeded runs of one cheat against the real control plane driven in this process
    (see the module docstring). Returns runs caught, results accepted before the catch, wrong values
    in final outputs, and tokens kept and claimed (micro)."""
    import logging
    import random as stdlib_random

    from nacl.signing import SigningKey

    import cheater_worker as cheats
    from hydra_tasks.embedded import EmbeddedRedis
    from hydra_tasks.jobs import collect, store
    from hydra_tasks.jobs.spec import parse_job_spec
    from hydra_tasks.ledger import book
    from hydra_tasks.models import ChunkSpec, WorkerState, payload_digest
    from hydra_tasks.scheduling import planner
    from hydra_tasks.settings import Settings
    from hydra_tasks.trust import identity
    from hydra_tasks.trust import results as signed_results
    from hydra_tasks.worker.compute import run_chunk

    logging.getLogger("hydra_tasks").setLevel(logging.ERROR)  # every catch logs warnings; the table says it
    kind, worker_cheat, count = KINDS[cheat]
    target, cheat_fn = cheats.CHEATS[worker_cheat]
    server = EmbeddedRedis(tmp / f"sim-{cheat}")
    url = server.start()
    out: dict[str, Any] = {"caught": 0, "accepted": [], "wrong": 0, "kept": 0, "claimed": 0, "runs": runs}
    try:
        app = create_app(Settings().with_(redis_url=url, data_dir=tmp / f"sim-{cheat}", pi_chunk_samples=2_000_000,
                                          adaptive=False, tile_px=48))
        for run in range(runs):
            app.redis.flushdb()
            stdlib_random.seed(run)
            cheats.rng = np.random.default_rng(run)
            cheats._tenth.update(n=0, phase=-1)  # a new cheater each run
            workers: dict[str, SigningKey] = {}
            now = time.time()
            names = ["honest-1", "honest-2", *[f"cheater-{i}" for i in range(count)]]
            for name in names:
                key = workers[name] = SigningKey.generate()
                registry.register(app.redis, registry.WorkerInfo(
                    worker_id=name, region="r", host="sim", pid=1, cores=1, concurrency=1, pi_samples_per_s=1e8,
                    mandelbrot_iters_per_s=1e8, state=WorkerState.ONLINE, started_at=now, last_seen=now,
                    public_key=identity.public_hex(key)))
                book.open_account(app.redis, identity.public_hex(key))
                if name.startswith("honest"):
                    app.redis.hset(keys.worker(name), "audits_passed", 400)  # veterans, as in the live runs
            samples = SIM_PI_LONG if cheat == "pi-tenth" else SIM_PI["params"]["samples"]
            spec = parse_job_spec({"kind": "pi", "params": {"samples": samples, "seed": 1_000 + run}}
                                  if kind == "pi" else SIM_MANDEL)
            job_id = store_job(app, spec, planner)
            sent_by_cheaters = 0
            for _ in range(500):
                if store.get_job(app.redis, job_id).is_final:
                    break
                for chunk, attempt, worker in dispatch_in_process(app):
                    key = workers[worker]
                    if worker.startswith("cheater") and target != "run_chunk":
                        sent_by_cheaters += 1
                        spec_obj = ChunkSpec.from_json(chunk)
                        payload = cheat_fn(spec_obj)  # the cheat, as the cheater worker runs it
                        honest = run_chunk(chunk, attempt=attempt, worker_id=worker, region="r")
                        result = signed_results.sign({**honest, "payload": payload, "digest": payload_digest(
                            honest["job_id"], honest["chunk_id"], payload)}, key)
                    else:
                        result = run_chunk(chunk, attempt=attempt, worker_id=worker, region="r", key=key)
                        if worker.startswith("cheater"):
                            sent_by_cheaters += 1
                            result = signed_results.sign({**result, "elapsed_s": 0.001, "cpu_s": 0.001}, key)
                    collect.collect(app.redis, app.settings, result)
            job = store.get_job(app.redis, job_id)
            out["wrong"] += wrong_values(app, job)
            caught = 0
            for name in names[2:]:
                w = registry.get_worker(app.redis, name)
                assert w is not None
                caught += bool(w.quarantined)
                out["accepted"].append(w.chunks_done)
                out["kept"] += int(app.redis.hget(keys.LEDGER_BALANCES, w.public_key) or 0)
            out["caught"] += caught == count
            per_result = pay_per_result(app, job, []) * MICRO_PER_TOKEN
            out["claimed"] += sent_by_cheaters * per_result
    finally:
        server.stop()
    return out


def store_job(app: HydraCelery, spec: Any, planner: Any) -> str:
    from hydra_tasks.jobs import store

    job_id = store.new_job_id()
    store.create_job(app.redis, spec, planner.plan(job_id, spec, app.settings), job_id=job_id)
    return job_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5, help="seeded runs per kind")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated cheats (of {', '.join(KINDS)})")
    parser.add_argument("--veteran", type=int, default=400, help="clean audits the honest workers earn first")
    parser.add_argument("--sim-runs", type=int, default=0,
                        help="seeded runs per kind against the real control plane driven in this process")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if unknown := [k for k in kinds if k not in KINDS]:
        parser.error(f"unknown cheat(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    if args.runs > 0:
        live(args, kinds, cpu)
    if args.sim_runs > 0:
        print(f"{cpu}; {args.sim_runs} seeded runs per kind against the real control plane driven in this process "
              f"(2 honest veterans + the cheater(s); π {SIM_PI['params']['samples']:.0e} samples in 2e6 chunks, "
              f"{SIM_PI_LONG:.0e} for pi-tenth, "
              f"Mandelbrot {SIM_MANDEL['params']['width']}x{SIM_MANDEL['params']['height']} in 48-px tiles)",
              flush=True)
        print(f"{'cheat':16s} {'caught in':>14s} {'accepted before (med/max)':>26s} {'wrong values':>13s} "
              f"{'tokens kept/claimed':>22s}", flush=True)
        with tempfile.TemporaryDirectory(prefix="hydra-cheat-sim-") as tmp:
            for cheat in kinds:
                r = simulate(cheat, args.sim_runs, Path(tmp))
                verdict = "n/a" if cheat == "fast-clock" else f"{r['caught']}/{r['runs']} runs"
                share = f"{r['kept'] / r['claimed']:.1%}" if r["claimed"] else "-"
                print(f"{cheat:16s} {verdict:>14s} {statistics.median(r['accepted']):>20.0f} / "
                      f"{max(r['accepted']):<3d} {r['wrong']:>13d} {share:>22s}", flush=True)


def live(args: argparse.Namespace, kinds: list[str], cpu: str) -> None:
    with tempfile.TemporaryDirectory(prefix="hydra-cheat-") as tmp, \
            running_stack(Path(tmp), {"eu-west": 2}, target_chunk_s=CHUNK_S, min_chunk_s=0.05) as stack:
        app = create_app(stack.child_settings())
        honest = [w.worker_id for w in registry.list_workers(app.redis)]
        took = warm_up(app, honest, args.veteran)
        print(f"{cpu}; 2 honest workers (warm-up to {args.veteran} clean audits each: {took:.0f} s) + the "
              f"cheater(s); {args.runs} seeded run(s) per kind; π job {PI_SAMPLES:.0e} samples, Mandelbrot "
              f"{MANDEL_JOB['params']['width']}x{MANDEL_JOB['params']['height']}; chunks of ~{CHUNK_S} s", flush=True)
        print(f"{'cheat':16s} {'caught in':>10s} {'accepted before (med/max)':>26s} {'wrong values':>13s} "
              f"{'tokens kept/claimed':>26s}", flush=True)
        totals = {"pi": [0, 0], "mandelbrot": [0, 0]}
        for cheat in kinds:
            rows = [run_once(stack, app, cheat, run, honest) for run in range(args.runs)]
            for r in rows:
                totals[r["kind"]][0] += r["audit"]
                totals[r["kind"]][1] += r["useful"]
            caught_runs = sum(r["caught"] == r["count"] for r in rows)
            accepted = [n for r in rows for n in r["accepted"]]
            wrong = sum(r["wrong"] for r in rows)
            kept, claimed = sum(r["kept"] for r in rows), sum(r["claimed"] for r in rows)
            share = f"{kept:.3f}/{claimed:.3f} ({kept / claimed:.1%})" if claimed else f"{kept:.3f}/0"
            verdict = f"{caught_runs}/{len(rows)} runs"
            if cheat == "fast-clock":  # honest values: nothing to catch; its claimed time is bounded instead
                verdict = "n/a"
            print(f"{cheat:16s} {verdict:>10s} {statistics.median(accepted):>20.0f} / {max(accepted):<3d} "
                  f"{wrong:>13d} {share:>26s}", flush=True)
        report = ledger_audit.verify(app.redis)
        print(f"ledger verify: {'OK' if report.ok else report.problems[:3]} ({report.reversals} reversals)")
        for kind, (audited, useful) in totals.items():
            if useful:
                print(f"verification overhead with cheaters, {kind}: {audited / useful:.2%} of the useful work "
                      f"recomputed (checks on the control plane + audit chunks)")
        single, double, honest_share = replication(app)
        print(f"honest-only π job, veterans: overhead {honest_share:.2%} (median of 3); "
              f"BOINC-style 2x replication of the same job: 100% extra compute, wall {double:.1f} s vs "
              f"{single:.1f} s ({double / single:.2f}x), medians of 3 interleaved pairs")


if __name__ == "__main__":
    main()
