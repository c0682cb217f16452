"""Where a near-empty chunk's CPU goes: milliseconds of CPU per chunk for each part of a local stack.

It starts the trusted stack of ``overhead.py`` (embedded Redis, a control worker, an intake worker,
two region workers; static 1,000-sample chunks), runs a warm-up job, then JOBS jobs of CHUNKS
chunks each, and reads the user + system CPU time of every process the stack started from
/proc/<pid>/stat before and after. CPU time, unlike chunks/s, does not depend on how busy the shared
machine is, so it compares two versions of the code better than a wall-clock rate does; it is what
issue 15's throughput comes down to on 2 cores (chunks/s <= 2 / CPU per chunk).

Run: `.venv/bin/python benchmarks/chunk_cpu.py` (Linux: it reads /proc). For an A/B of two versions,
run it alternately from two checkouts (PYTHONPATH=<checkout>) and compare the medians per part.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hydra_tasks.celery_app import create_app  # noqa: E402
from overhead import run_job  # noqa: E402
from support import running_stack  # noqa: E402

CHUNKS = 2_000
JOBS = 3
TICK = os.sysconf("SC_CLK_TCK")


def cpu_of_children() -> dict[int, tuple[str, float]]:
    """(command line, CPU seconds) of every live process descended from this one."""
    table: dict[int, tuple[int, str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), cmd, (int(fields[11]) + int(fields[12])) / TICK)
    me = os.getpid()

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = table[pid][0] if pid in table else 0
            if pid == me:
                return True
        return False

    return {pid: (cmd, cpu) for pid, (_, cmd, cpu) in table.items() if ours(pid)}


def part(cmd: str) -> str:
    for needle, name in (("redis-server", "redis"), ("hydra.intake", "intake"), ("hydra.region", "region workers"),
                         ("hydra.control", "control")):
        if needle in cmd:
            return name
    return "other"


def main() -> None:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    per_job: list[dict[str, float]] = []
    rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hydra-bench-cpu-") as tmp:
        with running_stack(Path(tmp), {"eu-west": 1, "us-east": 1}, pi_chunk_samples=1_000, adaptive=False) as stack:
            app = create_app(stack.child_settings())
            run_job(app, 1_000 * 200, 0)  # warm-up
            for seed in range(1, JOBS + 1):
                before = cpu_of_children()
                took = run_job(app, 1_000 * CHUNKS, seed, check=True)
                after = cpu_of_children()
                rates.append(CHUNKS / took)
                parts: dict[str, float] = {}
                for pid, (cmd, seconds) in after.items():
                    used = seconds - before.get(pid, (cmd, 0.0))[1]
                    parts[part(cmd)] = parts.get(part(cmd), 0.0) + used * 1000 / CHUNKS
                per_job.append(parts)
    names = sorted({name for parts in per_job for name in parts})
    print(f"{cpu}; {os.cpu_count()} CPUs; {JOBS} jobs of {CHUNKS:,} near-empty chunks; medians per job")
    for name in names + ["total"]:
        values = [sum(p.values()) if name == "total" else p.get(name, 0.0) for p in per_job]
        print(f"  {name:15s} {statistics.median(values):6.2f} ms CPU per chunk "
              f"({', '.join(f'{v:.2f}' for v in values)})")
    total = statistics.median(sum(p.values()) for p in per_job)
    print(f"  near-empty chunks/s {statistics.median(rates):.1f} (runs: {', '.join(f'{r:.1f}' for r in rates)}); "
          f"at most {2000 / total:.0f}/s on 2 fully busy CPUs at this CPU per chunk")


if __name__ == "__main__":
    main()
