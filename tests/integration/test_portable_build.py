"""A portable (baseline instruction set) build of the kernels returns exactly what the native
build returns: the Mandelbrot counts of a deep, boundary-heavy scene and π hit counts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hydra_tasks import compute

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

SCENES = [  # (xmin, ymax, dx, dy, width, height, max_iter)
    (-2.0, 1.25, 2.5 / 240, 2.5 / 240, 240, 240, 5000),             # whole set, main cardioid inside
    (-0.7445669, 0.1321523, 3.125e-05, 3.125e-05, 128, 96, 8000),    # seahorse valley
    (-1.3, 0.26, 0.2 / 160, 0.2 / 160, 160, 120, 6000),             # period-2 bulb decorations
]
PI_RANGES = [(1, 0, 10_000_000), (2**63 + 5, 123_456_789, 3_000_001), (42, 2**61, 1_000)]

BUILD = """
import sys, tomllib
from setuptools import Distribution, Extension
from Cython.Build import cythonize
cfg = tomllib.load(open(sys.argv[1], "rb"))
args = {m["name"].rsplit(".", 1)[1]: m["extra-compile-args"] for m in cfg["tool"]["setuptools"]["ext-modules"]}
exts = [Extension(name, [name + ".pyx"], extra_compile_args=args[name]) for name in ("_pi", "_mandelbrot")]
dist = Distribution({"ext_modules": cythonize(exts, quiet=True, language_level=3)})
cmd = dist.get_command_obj("build_ext")
cmd.inplace = True
dist.run_command("build_ext")
"""

RUN = """
import json, sys, numpy as np
import _mandelbrot, _pi
scenes, ranges = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for k, (xmin, ymax, dx, dy, w, h, mi) in enumerate(scenes):
    out = np.empty((h, w), dtype=np.uint32)
    _mandelbrot.fill_counts(out, xmin, ymax, dx, dy, 0, 0, mi)
    np.save(f"counts{k}.npy", out)
print(json.dumps({"isa": _mandelbrot.ISA, "hits": [_pi.count_hits(s, a, n) for s, a, n in ranges]}))
"""


@pytest.fixture(scope="module")
def portable(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Build the kernels without -march flags in a scratch directory and run them there."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    work = tmp_path_factory.mktemp("portable")
    for name in ("pi", "mandelbrot"):
        shutil.copy(ROOT / "kernels" / f"{name}.pyx", work / f"_{name}.pyx")
    env = {k: v for k, v in os.environ.items() if k not in ("CFLAGS", "CPPFLAGS")}
    build = subprocess.run([sys.executable, "-c", BUILD, str(ROOT / "pyproject.toml")], cwd=work, env=env,
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([sys.executable, "-c", RUN, json.dumps(SCENES), json.dumps(PI_RANGES)], cwd=work,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return work, json.loads(run.stdout)


def test_the_portable_build_targets_the_baseline_instruction_set(portable: tuple[Path, dict]) -> None:
    assert portable[1]["isa"] in ("baseline", "aarch64")


def test_portable_and_native_builds_give_identical_counts_and_hits(portable: tuple[Path, dict]) -> None:
    work, result = portable
    native_isa = compute.build_info()["isa"]
    for k, (xmin, ymax, dx, dy, w, h, mi) in enumerate(SCENES):
        native = compute.mandelbrot_counts(xmin=xmin, ymax=ymax, dx=dx, dy=dy, col0=0, row0=0, width=w,
                                           height=h, max_iter=mi)
        baseline = np.load(work / f"counts{k}.npy")
        assert int((native != baseline).sum()) == 0, f"scene {k}: native ({native_isa}) and portable builds differ"
        assert len(np.unique(native)) > 50  # boundary-heavy: many distinct counts
    assert result["hits"] == [compute.pi_hits(s, a, n) for s, a, n in PI_RANGES]
