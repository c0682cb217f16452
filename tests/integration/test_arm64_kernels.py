"""The kernels' inner loops built for arm64 (NEON) give bit for bit what this machine's build gives.

tests/native/kernel_check.c is the same C loops as hydra_tasks._pi and _mandelbrot (kernels/*.h)
without Python. It is cross-compiled with aarch64-linux-gnu-gcc (the module's flags: -O3
-ffp-contract=off -fno-fast-math, static) and run under qemu-aarch64 (user-mode emulation), and
natively for every variant this CPU runs; both must print the hits and counts that
hydra_tasks.compute returns here. Emulation says nothing about arm64 speed, only about results.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hydra_tasks import compute

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests" / "native" / "kernel_check.c"
FLAGS = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-Wall", "-Werror", f"-I{ROOT / 'kernels'}"]

PI_CASES = [(0, 0, 1), (1, 1, 1), (7, 3, 100_001), (2**64 - 1, 2**40 + 1, 300_007), (20261203, 0, 3_000_001),
            (99, 2**62 - 1_000, 1_000), (12345, 777, 2**20 + 5)]
SCENES = [  # xmin, ymax, dx, dy, col0, row0, width, height, max_iter, shortcuts
    (-2.0, 1.25, 2.5 / 160, 2.5 / 160, 0, 0, 160, 160, 3000, 1),            # whole set, main cardioid inside
    (-0.7445669, 0.1321523, 3.125e-05, 3.125e-05, 5, 3, 97, 61, 8000, 1),   # seahorse valley, odd sizes
    (-1.3, 0.26, 0.2 / 160, 0.2 / 160, 0, 0, 120, 90, 6000, 1),            # period-2 bulb decorations
    (-2.0, 1.25, 2.5 / 64, 2.5 / 64, 0, 0, 64, 64, 500, 0),                 # the plain loop, no shortcuts
]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian: gcc-aarch64-linux-gnu, qemu-user; .ci/run installs them as root)"
        if os.environ.get("HYDRA_REQUIRE_CROSS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _cases() -> str:
    lines = [f"pi {g} {s} {a} {n}" for s, a, n in PI_CASES for g in (0, 1)]
    for xmin, ymax, dx, dy, col0, row0, w, h, max_iter, shortcuts in SCENES:
        lines.append(f"mandel {xmin.hex()} {ymax.hex()} {dx.hex()} {dy.hex()} {col0} {row0} {w} {h} {max_iter} "
                     f"{shortcuts}")
    return "\n".join(lines) + "\n"


def _fnv1a(counts: np.ndarray) -> str:
    h = 0xCBF29CE484222325
    for byte in counts.astype("<u4").tobytes():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def _expected() -> list[tuple[str, ...]]:
    """What this machine's Python module gives, one tuple per case (the variant left out)."""
    out: list[tuple[str, ...]] = []
    for seed, start, count in PI_CASES:
        for g, name in enumerate(compute.GENERATORS):
            out.append(("pi", str(g), str(seed), str(start), str(count),
                        str(compute.pi_hits(seed, start, count, generator=name))))
    for xmin, ymax, dx, dy, col0, row0, w, h, max_iter, shortcuts in SCENES:
        counts = compute.mandelbrot_counts(xmin=xmin, ymax=ymax, dx=dx, dy=dy, col0=col0, row0=row0, width=w,
                                           height=h, max_iter=max_iter, shortcuts=bool(shortcuts))
        assert len(np.unique(counts)) > 30  # boundary-heavy: a rounding difference would show
        out.append(("mandel", _fnv1a(counts), str(int(counts.sum(dtype=np.uint64)))))
    return out


def _results(stdout: str) -> dict[str, list[tuple[str, ...]]]:
    by_variant: dict[str, list[tuple[str, ...]]] = {}
    for line in stdout.splitlines():
        kind, variant, *rest = line.split()
        by_variant.setdefault(variant, []).append((kind, *rest))
    return by_variant


@pytest.fixture(scope="module")
def expected() -> list[tuple[str, ...]]:
    return _expected()


def test_the_arm64_build_under_qemu_gives_this_machines_hits_and_counts(tmp_path: Path,
                                                                       expected: list[tuple[str, ...]]) -> None:
    gcc, qemu = _tool("aarch64-linux-gnu-gcc"), _tool("qemu-aarch64")
    binary = tmp_path / "kernel_check_arm64"
    build = subprocess.run([gcc, *FLAGS, "-static", "-o", str(binary), str(SOURCE)], capture_output=True, text=True,
                           timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    assert b"\x7fELF" == binary.read_bytes()[:4] and binary.read_bytes()[18] == 183  # e_machine: EM_AARCH64
    run = subprocess.run([qemu, str(binary)], input=_cases(), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    results = _results(run.stdout)
    assert list(results) == ["baseline"]  # NEON is arm64's baseline: the one variant there
    assert results["baseline"] == expected


def test_the_c_loops_alone_give_the_modules_results_on_every_variant_here(tmp_path: Path,
                                                                         expected: list[tuple[str, ...]]) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    binary = tmp_path / "kernel_check"
    build = subprocess.run([cc, *FLAGS, "-o", str(binary), str(SOURCE)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(binary)], input=_cases(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = _results(run.stdout)
    assert sorted(results) == sorted(compute.build_info()["variants_supported"])
    for variant, got in results.items():
        assert got == expected, variant
