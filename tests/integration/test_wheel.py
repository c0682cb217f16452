"""One manylinux wheel runs on every x86-64 CPU, at each CPU's speed, with the same results.

The wheel is built from a clean copy of this tree, repaired into a manylinux wheel by auditwheel and
installed into a fresh virtual environment without a compiler. There, every variant this CPU runs is
forced and must give this build's hits and counts. Its machine code is read back: vector (VEX/EVEX)
instructions appear only in the avx2/avx512 variants' functions, so the baseline path runs on any
x86-64. Under qemu-x86_64 emulating a CPU without AVX (Nehalem) the wheel picks the baseline variant
and one with AVX2 (Haswell) picks avx2, with the same results. (qemu's emulator itself does not trap
AVX instructions on a CPU model without them, hence the disassembly check.)
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hydra_tasks import compute

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOT_IN_A_CLONE = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "build", "dist", "__pycache__", "*.so",
                                        ".pytest_cache", ".mypy_cache")
PI_CASES = [(7, 3, 100_001), (2**64 - 1, 2**40 + 1, 300_007), (20261203, 0, 2_000_001)]
SCENE = dict(xmin=-0.7445669, ymax=0.1321523, dx=3.125e-05, dy=3.125e-05, col0=0, row0=0, width=97, height=61,
             max_iter=8000)

RUN = """
import json, sys
import numpy as np
from hydra_tasks import compute
cases, scene, only = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3] == "auto"
info = compute.build_info()
out = {"info": info, "file": compute.__file__, "by_variant": {}}
for variant in ([info["isa"]] if only else info["variants_supported"]):
    hits = [compute.pi_hits(s, a, n, generator=g, variant=variant) for s, a, n in cases for g in compute.GENERATORS]
    counts = compute.mandelbrot_counts(**scene, variant=variant)
    out["by_variant"][variant] = {"hits": hits, "counts_sum": int(counts.sum(dtype=np.uint64)),
                                  "counts_crc": int(__import__("zlib").crc32(counts.tobytes()))}
print(json.dumps(out))
"""


def _expected() -> dict:
    counts = compute.mandelbrot_counts(**SCENE)
    import zlib

    return {"hits": [compute.pi_hits(s, a, n, generator=g) for s, a, n in PI_CASES for g in compute.GENERATORS],
            "counts_sum": int(counts.sum(dtype=np.uint64)), "counts_crc": int(zlib.crc32(counts.tobytes()))}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m build --wheel` of a clean copy, then `auditwheel repair`."""
    if platform.machine() != "x86_64":
        pytest.skip("the variants and this wheel's checks are for x86-64")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler to build the wheel with")
    src, out, fixed = (tmp_path_factory.mktemp(n) for n in ("src", "dist", "wheelhouse"))
    src = src / "hydra"
    shutil.copytree(ROOT, src, ignore=NOT_IN_A_CLONE)
    build = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(src)],
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (raw,) = out.glob("hydra_volunteer-*.whl")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    repair = subprocess.run([sys.executable, "-m", "auditwheel", "repair", "--wheel-dir", str(fixed), str(raw)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert repair.returncode == 0, repair.stdout[-3000:] + repair.stderr[-3000:]
    (repaired,) = fixed.glob("hydra_volunteer-*.whl")
    return repaired


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed and no compiler reachable (CC and PATH point at nothing)."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # Offline: the dependencies come from this venv, after the fresh one's own site-packages.
    Path(purelib, "_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    nothing = tmp_path_factory.mktemp("empty-path")
    env = {"PATH": str(nothing), "CC": "/bin/false", "HOME": str(nothing)}
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index",
                              "--no-deps", "--only-binary=:all:", str(wheel)],
                             capture_output=True, text=True, timeout=600, env=env)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    return python


def test_the_repaired_wheel_is_a_manylinux_wheel(wheel: Path) -> None:
    assert re.search(r"[-.]manylinux_2_\d+_x86_64\.whl$", wheel.name), wheel.name
    show = subprocess.run([sys.executable, "-m", "auditwheel", "show", str(wheel)], capture_output=True, text=True,
                          timeout=300)
    assert show.returncode == 0 and "manylinux_2_" in show.stdout, show.stdout + show.stderr
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert any(re.match(r"hydra_tasks/_pi\..*\.so$", n) for n in names)
    assert any(re.match(r"hydra_tasks/_mandelbrot\..*\.so$", n) for n in names)


def test_every_variant_of_the_installed_wheel_gives_this_builds_results(installed: Path) -> None:
    run = subprocess.run([str(installed), "-c", RUN, json.dumps(PI_CASES), json.dumps(SCENE), "all"],
                         capture_output=True, text=True, timeout=600, cwd=installed.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout)
    assert got["file"].startswith(str(installed.parents[1]))  # the wheel's copy, not this checkout's
    assert got["info"]["variants_compiled"] == ["baseline", "avx2", "avx512"]
    assert got["info"]["variants_supported"] == compute.build_info()["variants_supported"]
    expected = _expected()
    for variant, result in got["by_variant"].items():
        assert result == expected, variant


def test_vector_instructions_appear_only_in_the_avx_variants(installed: Path) -> None:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    site = installed.parents[1] / "lib"
    modules = sorted(site.glob("python3*/site-packages/hydra_tasks/_*.so"))
    assert len(modules) == 2
    for module in modules:
        text = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(module)], capture_output=True, text=True,
                              check=True, timeout=300).stdout
        function, vex_in = "", set()
        for line in text.splitlines():
            head = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
            if head:
                function = head.group(1)
                continue
            parts = line.split("\t")
            if len(parts) >= 2 and parts[-1].strip().startswith("v"):  # VEX/EVEX-encoded: AVX and later
                vex_in.add(function)
        assert vex_in, f"{module.name}: no AVX code at all, so the variants were not compiled"
        outside = sorted(f for f in vex_in if not re.search(r"_avx(2|512)\b", f))
        assert outside == [], f"{module.name}: AVX instructions outside the avx variants: {outside[:10]}"


@pytest.mark.parametrize(("cpu", "variant"), [("Nehalem", "baseline"), ("Haswell", "avx2")])
def test_on_an_emulated_cpu_the_wheel_picks_the_variant_it_supports(installed: Path, cpu: str, variant: str) -> None:
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        message = "qemu-x86_64 is not installed (Debian: qemu-user; .ci/run installs it as root)"
        if os.environ.get("HYDRA_REQUIRE_CROSS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    run = subprocess.run([qemu, "-cpu", cpu, str(installed), "-c", RUN, json.dumps(PI_CASES[:1]),
                          json.dumps({**SCENE, "width": 24, "height": 16, "max_iter": 500}), "auto"],
                         capture_output=True, text=True, timeout=900, cwd=installed.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout)
    assert got["info"]["isa"] == variant and got["info"]["variants_supported"][-1] == variant
    small = {**SCENE, "width": 24, "height": 16, "max_iter": 500}
    counts = compute.mandelbrot_counts(**small)
    import zlib

    assert got["by_variant"][variant] == {
        "hits": [compute.pi_hits(s, a, n, generator=g) for s, a, n in PI_CASES[:1] for g in compute.GENERATORS],
        "counts_sum": int(counts.sum(dtype=np.uint64)), "counts_crc": int(zlib.crc32(counts.tobytes()))}
