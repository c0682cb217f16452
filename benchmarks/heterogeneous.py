"""Static uniform vs adaptive chunking and tiling on heterogeneous real workers.

    .venv/bin/python benchmarks/heterogeneous.py [--seconds 16] [--repeats 1]

Four real Celery workers on this machine are made heterogeneous with the CPU cap (100%, 50%,
25%, 12.5%). The same π and Mandelbrot jobs run with static uniform chunks (HYDRA_ADAPTIVE=false:
four equal sample ranges or square tiles per worker, to whoever asks) and with adaptive chunking and tiling.
For each run it prints:

* makespan (first dispatch to last merge);
* ideal makespan = total work / total capacity, where each worker's capacity is the work it
  did divided by the time it spent computing in that run (so both modes are judged by the
  speeds the workers really had);
* load imbalance = (latest − earliest worker finish) / makespan;
* the ratios: makespan / ideal, and the imbalance reduction of adaptive against static.

Targets (issue 4): adaptive makespan ≤ 1.15x ideal for both kinds; load imbalance reduced by
≥ 80% against static.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hydra_tasks import keys  # noqa: E402
from hydra_tasks.celery_app import create_app  # noqa: E402
from hydra_tasks.jobs.submit import submit_job  # noqa: E402
from hydra_tasks.metrics import load_imbalance  # noqa: E402
from support import running_stack, wait_for_job  # noqa: E402

CAPS = {"bench-1": 100.0, "bench-2": 50.0, "bench-3": 25.0, "bench-4": 12.5}


# Seahorse valley with bulbs: per-pixel cost varies by orders of magnitude across the image.
SCENE = {"center_x": -0.745, "center_y": 0.113, "span": 0.01, "max_iter": 1_000_000, "colouring": "bands"}


def analyse(app: Any, job: dict[str, Any]) -> dict[str, float]:
    log = [json.loads(e) for e in app.redis.lrange(keys.job_log(job.id), 0, -1)]
    work: dict[str, float] = {}
    busy: dict[str, float] = {}
    for e in log:
        work[e["worker"]] = work.get(e["worker"], 0.0) + e["work"]
        busy[e["worker"]] = busy.get(e["worker"], 0.0) + e["elapsed_s"]
    capacity = sum(work[w] / busy[w] for w in work if busy[w] > 0)
    # First dispatch to last merged chunk (finalizing the result is the same work in both modes).
    makespan = max(w.last_ms for w in job.workers.values()) / 1000 - job.started_at
    ideal = sum(work.values()) / capacity
    return {"makespan": makespan, "ideal": ideal, "ratio": makespan / ideal,
            "imbalance": load_imbalance(job) or 0.0, "chunks": job.chunks_done, "workers": len(work)}


def run_mode(adaptive: bool, samples: int, mandel: dict[str, Any], repeats: int,
             tmp: Path) -> dict[str, list[dict[str, float]]]:
    # Static uniform: 4 equal π ranges and 4 equal tiles per worker, handed to whoever asks.
    settings = {"adaptive": adaptive, "target_chunk_s": 1.0, "min_chunk_s": 0.2, "lease_s": 120.0,
                "pi_chunk_samples": samples // 16, "tile_px": -(-max(mandel["width"], mandel["height"]) // 4)}
    results: dict[str, list[dict[str, float]]] = {"pi": [], "mandelbrot": []}
    with running_stack(tmp / ("adaptive" if adaptive else "static"), {"bench": 4}, cpu_limits=CAPS,
                       **settings) as stack:
        app = create_app(stack.child_settings())
        # A short warm-up job lets every worker's model see real chunks.
        wait_for_job(app, submit_job(app, {"kind": "pi", "params": {"samples": 2e8, "seed": 1}}).id, timeout_s=300)
        for r in range(repeats):
            job = wait_for_job(app, submit_job(app, {"kind": "pi", "params": {"samples": samples, "seed": 10 + r}}).id,
                               timeout_s=900)
            results["pi"].append(analyse(app, job))
            job = wait_for_job(app, submit_job(app, {"kind": "mandelbrot", "params": mandel}).id, timeout_s=900)
            results["mandelbrot"].append(analyse(app, job))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=16.0, help="work per job, in seconds of the fleet")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"Workers: {', '.join(f'{n} at {c:g}% CPU' for n, c in CAPS.items())}; medians of {args.repeats}")
    fleet = sum(CAPS.values()) / 100  # cores' worth of compute the four workers may use
    # Fixed work, so that runs compare (sized from one-core speeds on the development machine;
    # the Mandelbrot job came out nearer 20 s of fleet work there).
    samples = int(1.5e9 * fleet * args.seconds)
    width = int((args.seconds * fleet / 1.3e-6 / 0.75) ** 0.5)
    mandel = {**SCENE, "width": width, "height": int(width * 0.75)}
    print(f"π jobs of {samples:,} samples and Mandelbrot {mandel['width']}x{mandel['height']} at max_iter "
          f"{mandel['max_iter']}, each about {args.seconds:g} s for the fleet")
    with tempfile.TemporaryDirectory(prefix="hydra-hetero-") as tmp:
        static = run_mode(False, samples, mandel, args.repeats, Path(tmp))
        adaptive = run_mode(True, samples, mandel, args.repeats, Path(tmp))
    print(f"\n{'':28}{'makespan':>10}{'ideal':>9}{'ratio':>8}{'imbalance':>11}{'chunks':>8}")
    verdicts = []
    for kind in ("pi", "mandelbrot"):
        rows = {}
        for name, runs in (("static uniform", static[kind]), ("adaptive", adaptive[kind])):
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            rows[name] = med
            print(f"  {kind + ', ' + name:<26}{med['makespan']:9.2f}s{med['ideal']:8.2f}s{med['ratio']:7.2f}x"
                  f"{med['imbalance']:10.1%}{med['chunks']:8.0f}")
        reduction = 1 - rows["adaptive"]["imbalance"] / max(rows["static uniform"]["imbalance"], 1e-9)
        speedup = rows["static uniform"]["makespan"] / rows["adaptive"]["makespan"]
        print(f"  {kind}: adaptive is {speedup:.2f}x faster; imbalance reduced by {reduction:.0%}")
        verdicts += [(f"{kind}: adaptive makespan / ideal (<= 1.15)", rows["adaptive"]["ratio"], 1.15, "le"),
                     (f"{kind}: imbalance reduction vs static (>= 80%)", reduction, 0.80, "ge")]
    print("\nTargets")
    for name, value, target, op in verdicts:
        ok = value <= target if op == "le" else value >= target
        print(f"  {name:<50} {value:7.2f}  {'ok' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
