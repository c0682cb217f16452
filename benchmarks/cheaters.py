"""Cheating volunteers against Hydra's exact spot checks (issue 12), with real workers.

For each kind of cheat it starts a real local stack (embedded Redis, control and intake workers, two
honest workers) plus the cheater(s) (benchmarks/cheater_worker.py: the real Celery worker with its
kernel replaced), runs a job, and prints per kind: whether the cheater was caught (quarantined),
how many of its results were accepted before that, wrong values in the final output (π hits against
the kernel run in this process; Mandelbrot pixels against the whole image rendered in this process),
and tokens kept against tokens it asked for. Then the overall verification overhead: work recomputed
by spot checks / useful work, next to BOINC-style 2x replication (every unit computed twice: 100%,
by construction; not run).

Run: `.venv/bin/python benchmarks/cheaters.py [--runs N] [--kinds a,b]` (N seeded runs per kind, default 1).
Targets (issue 12): every cheater caught in >= 99% of runs, 0 wrong values in any final output,
overhead <= 5%, cheaters keep <= 1% of what they claimed.
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

from hydra_tasks import compute as kernels  # noqa: E402
from hydra_tasks import keys  # noqa: E402
from hydra_tasks.celery_app import create_app  # noqa: E402
from hydra_tasks.jobs import mandelbrot  # noqa: E402
from hydra_tasks.jobs.submit import submit_job  # noqa: E402
from hydra_tasks.ledger.book import MICRO_PER_TOKEN  # noqa: E402
from hydra_tasks.worker import registry  # noqa: E402
from support import running_stack, wait_for_job  # noqa: E402

KINDS = {  # cheat -> (job kind, how many cheating workers)
    "pi-all": ("pi", 1), "pi-tenth": ("pi", 1), "pi-one-block": ("pi", 1), "fast-clock": ("pi", 1),
    "colluding-pair": ("pi", 2), "mandel-1pct": ("mandelbrot", 1), "mandel-upscaled": ("mandelbrot", 1),
}
PI_JOB = {"kind": "pi", "params": {"samples": 6_000_000_000}}
MANDEL_JOB = {"kind": "mandelbrot", "params": {"width": 1600, "height": 1200, "max_iter": 3_000,
                                               "center_x": -0.7435, "center_y": 0.1314, "span": 0.004}}


def cheater_argv(name: str) -> list[str]:
    return [sys.executable, str(ROOT / "benchmarks" / "cheater_worker.py"), "", "-Q", "hydra.region.eu-west",
            "-n", f"{name}@%h", "-c", "1", "--loglevel", "INFO", "--without-mingle", "--without-gossip"]


def wrong_values(app: Any, job: Any) -> int:
    if job.kind == "pi":
        p = job.params
        return int(job.result["hits"] != kernels.pi_hits(int(p["seed"]), 0, int(p["samples"])))
    p = job.params
    got = mandelbrot.decode_counts(app.redis.get(keys.job_counts(job.id)), int(p["height"]), int(p["width"]))
    ref = kernels.mandelbrot_counts(xmin=float(p["xmin"]), ymax=float(p["ymax"]), dx=float(p["dx"]),
                                    dy=float(p["dy"]), col0=0, row0=0, width=int(p["width"]),
                                    height=int(p["height"]), max_iter=int(p["max_iter"]))
    return int(np.count_nonzero(got != ref))


def run_kind(tmp: Path, cheat: str, seed: int) -> dict[str, Any]:
    kind, count = KINDS[cheat]
    worker_cheat = "pi-all" if cheat == "colluding-pair" else cheat
    with running_stack(tmp, {"eu-west": 2}) as stack:
        app = create_app(stack.child_settings())
        names = [f"cheater{i}" for i in range(count)]
        for name in names:
            argv = cheater_argv(name)
            argv[2] = worker_cheat
            stack.spawn(name, argv, env={"HYDRA_KEY_FILE": str(stack.settings.data_dir / "keys" / f"{name}.key")})
        stack.wait_for_workers(2 + count, timeout_s=90)
        spec = PI_JOB if kind == "pi" else MANDEL_JOB
        job = wait_for_job(app, submit_job(app, {**spec, "params": {**spec["params"], "seed": seed}}
                                           if kind == "pi" else spec).id, timeout_s=600)
        out: dict[str, Any] = {"wrong": wrong_values(app, job), "caught": 0, "accepted_before": [], "kept": 0.0,
                               "sent": 0, "paid": 0}
        for name in names:
            (w,) = [w for w in registry.list_workers(app.redis) if w.worker_id.startswith(name + "@")]
            out["caught"] += bool(w.quarantined)
            out["accepted_before"].append(w.chunks_done)
            out["kept"] += int(app.redis.hget(keys.LEDGER_BALANCES, w.public_key) or 0) / MICRO_PER_TOKEN
            out["sent"] += len(re.findall(r"Task hydra\.compute_chunk\[[^\]]+\] succeeded",
                                          stack.procs[name].log_path.read_text(errors="replace")))
            out["paid"] += w.chunks_done
        honest = [w for w in registry.list_workers(app.redis) if not w.worker_id.startswith("cheater")]
        earned = sum(int(app.redis.hget(keys.LEDGER_BALANCES, w.public_key) or 0) for w in honest) / MICRO_PER_TOKEN
        done = sum(w.chunks_done for w in honest)
        out["claimed"] = out["sent"] * (earned / done if done else 0.0)  # what its results would have earned
        checks = app.redis.hgetall(keys.SPOT_CHECKS)
        out["audit_units"] = int(checks.get(f"units:{kind}", 0))
        out["useful_units"] = int(job.units_done) if kind == "pi" else int(job.params["width"]) * int(
            job.params["height"])
        out["count"] = count
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1, help="seeded runs per kind")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated cheats (of {', '.join(KINDS)})")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if unknown := [k for k in kinds if k not in KINDS]:
        parser.error(f"unknown cheat(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    print(f"{cpu}; 2 honest workers + the cheater(s) per run; {args.runs} run(s) per kind")
    print(f"{'cheat':16s} {'caught':>8s} {'accepted before':>16s} {'wrong values':>13s} {'tokens kept/claimed':>20s}")
    audit = useful = 0
    for cheat in kinds:
        rows = []
        with tempfile.TemporaryDirectory(prefix="hydra-cheat-") as tmp:
            for run in range(args.runs):
                rows.append(run_kind(Path(tmp) / f"r{run}", cheat, seed=1_000 + run))
        caught = sum(r["caught"] for r in rows)
        cheaters = sum(r["count"] for r in rows)
        before = [n for r in rows for n in r["accepted_before"]]
        wrong = sum(r["wrong"] for r in rows)
        kept, claimed = sum(r["kept"] for r in rows), sum(r["claimed"] for r in rows)
        audit += sum(r["audit_units"] for r in rows)
        useful += sum(r["useful_units"] for r in rows)
        share = f"{kept:.3f}/{claimed:.3f} ({kept / claimed:.1%})" if claimed else f"{kept:.3f}/0"
        verdict = f"{caught:>3d} of {cheaters:<2d}"
        if cheat == "fast-clock":  # honest values: nothing to catch; its claimed time is bounded instead
            verdict = "n/a (honest values)"
        print(f"{cheat:16s} {verdict:>8s} {str(before):>16s} {wrong:>13d} {share:>20s}", flush=True)
    print(f"verification overhead: spot checks recomputed {audit / useful:.2%} of the useful work "
          f"(BOINC-style 2x replication: 100%, by construction)")


if __name__ == "__main__":
    main()
