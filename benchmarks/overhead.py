"""Per-chunk overhead of Hydra's pipeline (dispatch -> Celery -> compute -> collect -> merge).

Starts a real local stack (embedded Redis, control worker, two region workers), runs π jobs
whose chunks do almost no work, and prints the per-chunk cost; then runs the same samples
with realistic chunks and prints efficiency against the kernel called directly in this
process (the reference). Run: `.venv/bin/python benchmarks/overhead.py`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hydra_tasks import compute  # noqa: E402
from hydra_tasks.celery_app import create_app  # noqa: E402
from hydra_tasks.jobs.submit import submit_job  # noqa: E402
from support import running_stack, wait_for_job  # noqa: E402

WORKERS = 2
REPEATS = 3


def run_job(app, samples: int, seed: int) -> tuple[float, dict]:
    t0 = time.perf_counter()
    job = wait_for_job(app, submit_job(app, {"kind": "pi", "params": {"samples": samples, "seed": seed}}).id,
                       timeout_s=600)
    return time.perf_counter() - t0, job


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hydra-bench-") as tmp:
        # 1) Empty chunks: everything is overhead.
        tiny_chunks = 2_000
        with running_stack(Path(tmp) / "a", {"eu-west": 1, "us-east": 1}, pi_chunk_samples=1_000,
                           adaptive=False) as stack:  # static chunks: measure the pipeline, not sizing
            app = create_app(stack.child_settings())
            run_job(app, 1_000 * 200, 0)  # warm-up
            walls = [run_job(app, 1_000 * tiny_chunks, seed)[0] for seed in range(1, REPEATS + 1)]
        wall = statistics.median(walls)
        per_chunk_ms = wall / tiny_chunks * 1000
        print(f"pipeline throughput, near-empty chunks: {tiny_chunks / wall:,.0f} chunks/s "
              f"(median of {REPEATS}); {per_chunk_ms:.2f} ms wall per chunk with {WORKERS} workers, "
              f"{per_chunk_ms * WORKERS:.2f} ms of a worker slot per chunk")

        # 2) Realistic chunks vs. calling the kernel directly in this process.
        t0 = time.perf_counter()
        compute.pi_hits(7, 0, 400_000_000)
        kernel_rate = 400_000_000 / (time.perf_counter() - t0)
        chunk = int(kernel_rate * 0.25)  # chunks of about 250 ms on this machine
        samples = 40 * chunk
        ideal = samples / (kernel_rate * WORKERS)
        with running_stack(Path(tmp) / "b", {"eu-west": 1, "us-east": 1}, pi_chunk_samples=chunk,
                           adaptive=False) as stack:
            app = create_app(stack.child_settings())
            results = [run_job(app, samples, seed) for seed in range(1, REPEATS + 1)]
        wall = statistics.median(w for w, _ in results)
        chunk_s = chunk / kernel_rate
        print(f"kernel in-process: {kernel_rate / 1e6:,.0f} M samples/s on one core; chunk of {chunk:,} samples "
              f"= {chunk_s * 1000:.0f} ms")
        print(f"{samples:,} samples through Hydra on {WORKERS} workers: median wall {wall:.2f}s, ideal "
              f"{ideal:.2f}s -> efficiency {ideal / wall:.1%} (ratio wall/ideal {wall / ideal:.3f})")
        print(f"estimated overhead per chunk vs chunk compute: {per_chunk_ms * WORKERS / (chunk_s * 1000):.2%}")


if __name__ == "__main__":
    main()
