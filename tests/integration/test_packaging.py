"""The source distribution builds on its own: it carries the kernels (the Cython layers and the C loops
they include) and the licence, and `pip install` of it gives working kernels in a fresh virtual
environment."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest

from hydra_tasks import compute

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

RUN = """
import json, sys
import importlib.metadata as md
import hydra_tasks, hydra_tasks._pi as pi, hydra_tasks._mandelbrot as mandelbrot, hydra_webapp
dist = md.distribution("hydra-volunteer")
print(json.dumps({"hydra_tasks": hydra_tasks.__file__, "hydra_webapp": hydra_webapp.__file__,
                  "variants": [pi.SUPPORTED, mandelbrot.SUPPORTED],
                  "hits": pi.count_hits(7, 0, 100_000, "philox4x32-10", pi.BEST),
                  "license": dist.metadata["License-Expression"],
                  "files": [str(f) for f in dist.files or []]}))
"""


# What a fresh clone does not have: an old *.egg-info/SOURCES.txt would add every file it lists to the sdist.
NOT_IN_A_CLONE = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "build", "dist", "__pycache__", "*.so",
                                        ".pytest_cache", ".mypy_cache")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m build --sdist` of a clean copy of this tree (offline: setuptools, Cython and build come
    from the test extra)."""
    src, out = tmp_path_factory.mktemp("src") / "hydra", tmp_path_factory.mktemp("dist")
    shutil.copytree(ROOT, src, ignore=NOT_IN_A_CLONE)
    build = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (path,) = out.glob("hydra_volunteer-*.tar.gz")
    return path


def test_the_sdist_carries_the_kernels_their_c_loops_and_the_licence(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        top = sdist.name.removesuffix(".tar.gz")
        licence = tar.extractfile(f"{top}/LICENSE")
        assert licence is not None
        text = licence.read().decode()
    for needed in ("kernels/pi.pyx", "kernels/mandelbrot.pyx", "kernels/hydra_kernels.h", "kernels/pi_core.h",
                   "kernels/mandel_core.h", "kernels/hv_undef.h", "kernels/variants.pxi", "LICENSE", "README.md",
                   "pyproject.toml", "hydra_tasks/_pi.pyi", "webapp/templates/index.html", "webapp/static/app.js",
                   "hydra_tasks/lua/merge.lua", "hydra_tasks/lua/_leases.lua"):
        assert needed in names, f"{needed} is missing from {sdist.name}"
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert not any(name.endswith((".so", ".pyc")) for name in names)


def test_pip_install_of_the_sdist_gives_working_kernels_in_a_fresh_venv(sdist: Path, tmp_path: Path) -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # Offline: the fresh venv sees this venv's packages (dependencies, setuptools, Cython) *after* its own
    # site-packages; a plain path entry does not run this venv's editable-install hook.
    Path(purelib, "_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index",
                              "--no-deps", "--no-build-isolation", str(sdist)],
                             capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    run = subprocess.run([str(python), "-c", RUN], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    info = json.loads(run.stdout)
    assert info["hydra_tasks"].startswith(str(venv)) and info["hydra_webapp"].startswith(str(venv))
    assert info["hits"] == compute.pi_hits(7, 0, 100_000)
    assert info["variants"][0] == info["variants"][1] == compute.build_info()["variants_supported"]
    assert info["license"] == "Apache-2.0" and any(f.endswith("LICENSE") for f in info["files"])
    assert any(f.endswith("hydra_webapp/templates/index.html") for f in info["files"])
    assert any(f.endswith("hydra_tasks/lua/grant.lua") for f in info["files"])  # the state layer's scripts
    version = subprocess.run([str(venv / "bin" / "hydra"), "--version"], capture_output=True, text=True, timeout=60,
                             cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("hydra 0."), version.stdout + version.stderr
