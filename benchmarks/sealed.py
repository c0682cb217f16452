"""What sealed payloads (HYDRA_ENCRYPTION, trust/sealing.py) cost on the demo jobs.

Starts a real local stack (embedded Redis, control and intake workers, a worker in eu-west and one
in us-east, `hydra demo`'s quick timings) with encryption off, and one with it on, alternately,
ROUNDS times each (the order flips every round, so a drift of the shared machine falls on both).
On each stack it runs `hydra demo`'s two jobs together REPEATS times: π with 4·10⁹ samples and a
1200×900 Mandelbrot with max_iter 1000, and times submit → both done. It prints the medians, the
on/off ratio (target: at most 1.05, issue 12), and checks that both modes give bit-identical
results. Before that it times sealing and opening one demo-sized chunk and result in this process.

Run: `.venv/bin/python benchmarks/sealed.py [ROUNDS]`.
"""

from __future__ import annotations

import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hydra_tasks import keys  # noqa: E402
from hydra_tasks.celery_app import create_app  # noqa: E402
from hydra_tasks.jobs.submit import submit_job  # noqa: E402
from hydra_tasks.models import ChunkSpec, JobKind  # noqa: E402
from hydra_tasks.jobs import mandelbrot  # noqa: E402
from hydra_tasks.trust import identity, sealing  # noqa: E402
from support import running_stack, wait_for_job  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
REPEATS = 2  # demo runs per stack
DEMO_QUICK = dict(sweep_interval_s=1.0, heartbeat_s=1.0, worker_timeout_s=5.0, lease_s=30.0)  # cli._demo_settings
PI = {"kind": "pi", "params": {"samples": 4_000_000_000, "seed": 2026}}
MANDELBROT = {"kind": "mandelbrot", "params": {"width": 1200, "height": 900, "max_iter": 1000, "center_x": -0.75,
                                               "center_y": 0.0, "span": 3.0}}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
        cpus = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("CPU(s):"))
        return f"{name}, {cpus} CPUs"
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def in_process_costs(tmp: Path) -> str:
    """Seal + open of a π chunk and of a demo-sized Mandelbrot tile's result (300×225 pixels), in ms."""
    worker = SigningKey.generate()
    control = sealing.control_box(tmp, identity.public_hex(worker))
    mine = sealing.worker_box(worker, sealing.control_public_hex(tmp))
    chunk = {"job_id": "0" * 16, "chunk_id": "c1", "kind": "pi", "params": {"start": 0, "count": 10**9,
                                                                            "seed": 2026}, "units": 10**9}
    params = {**mandelbrot.parse_params(MANDELBROT["params"]), "col0": 300, "row0": 300, "width": 300,
              "height": 225, "smooth": True}
    spec = ChunkSpec("0" * 16, "t1", JobKind.MANDELBROT, params, 300 * 225)
    payload = mandelbrot.compute(spec)
    result = {"job_id": "0" * 16, "chunk_id": "t1", "attempt": 1, "payload": payload, "error": None}
    n = 200
    t0 = time.perf_counter()
    for _ in range(n):
        sealing.open_chunk(mine, sealing.seal_chunk(control, chunk, 1), 1)
    chunk_ms = (time.perf_counter() - t0) / n * 1e3
    t0 = time.perf_counter()
    for _ in range(n):
        sealing.open_result(control, sealing.seal_result(mine, result))
    tile_ms = (time.perf_counter() - t0) / n * 1e3
    size = sum(len(str(v)) for v in payload.values())
    return (f"in process: seal+open a π chunk {chunk_ms:.3f} ms; a 300x225 Mandelbrot tile's result "
            f"({size / 1e3:.0f} kB of payload) {tile_ms:.3f} ms")


def demo_runs(tmp: Path, encryption: bool) -> tuple[list[float], list[Any]]:
    """Wall seconds of REPEATS demo runs on a fresh stack, and what each run computed."""
    walls, outputs = [], []
    with running_stack(tmp, {"eu-west": 1, "us-east": 1}, encryption=encryption, **DEMO_QUICK) as stack:
        app = create_app(stack.child_settings())
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            pi, mandel = submit_job(app, PI), submit_job(app, MANDELBROT)
            pi_done = wait_for_job(app, pi.id, timeout_s=600)
            mandel_done = wait_for_job(app, mandel.id, timeout_s=600)
            walls.append(time.perf_counter() - t0)
            assert pi_done.state == mandel_done.state == "done", (pi_done, mandel_done)
            outputs.append((pi_done.result["hits"], app.redis.get(keys.job_counts(mandel.id))))
    return walls, outputs


def main() -> None:
    print(f"CPU: {cpu_name()}")
    walls: dict[bool, list[float]] = {False: [], True: []}
    outputs: dict[bool, list[Any]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="hydra-sealed-bench-") as tmp:
        print(in_process_costs(Path(tmp)))
        for round_ in range(ROUNDS):
            for encryption in ((False, True) if round_ % 2 == 0 else (True, False)):
                w, o = demo_runs(Path(tmp) / f"{'on' if encryption else 'off'}-{round_}", encryption)
                walls[encryption] += w
                outputs[encryption] += o
                print(f"  round {round_ + 1}, encryption {'on ' if encryption else 'off'}: "
                      f"{', '.join(f'{x:.2f}' for x in w)} s", flush=True)
    identical = len({repr(o) for o in outputs[False] + outputs[True]}) == 1
    off, on = statistics.median(walls[False]), statistics.median(walls[True])
    print(f"demo jobs (π 4e9 samples + Mandelbrot 1200x900, max_iter 1000, together), 2 workers, "
          f"{ROUNDS} stacks x {REPEATS} runs per mode:")
    print(f"  encryption off: median {off:.2f} s")
    print(f"  encryption on : median {on:.2f} s")
    ratio = on / off
    print(f"  on/off = {ratio:.3f} ({(ratio - 1) * 100:+.1f}%; target <= +5%: {'met' if ratio <= 1.05 else 'MISSED'}); "
          f"results bit-identical in every run: {identical}")


if __name__ == "__main__":
    main()
