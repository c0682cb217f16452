"""Build backend: setuptools, plus the machine's instruction set for the Cython kernels.

pyproject.toml names this module as its PEP 517 backend (``backend-path = ["kernels"]``);
it is used only while building and is not installed.

* By default the kernels are compiled for the building machine (``-march=native`` on x86-64,
  ``-mcpu=native`` on arm64): volunteers build on the machine that computes, and the
  compiler's SIMD code is 4-5x faster than baseline x86-64 here.
* ``HYDRA_PORTABLE=1`` builds for the architecture's baseline instead (any x86-64, any
  arm64), e.g. for wheels or images that run on other machines.

Results are bit-identical either way: the extensions are always compiled with
``-ffp-contract=off -fno-fast-math`` (pyproject.toml), which come after these flags.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Iterator

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403 - re-export the standard PEP 517 hooks


def native_flags() -> list[str]:
    """The flags that target this machine, or [] if portable or the compiler refuses them."""
    if os.environ.get("HYDRA_PORTABLE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return []
    machine = platform.machine().lower()
    flags = ["-mcpu=native"] if machine in {"aarch64", "arm64"} else ["-march=native"]
    return flags if _compiler_accepts(flags) else []


def _compiler_accepts(flags: list[str]) -> bool:
    cc = os.environ.get("CC", "cc").split()[0]
    if shutil.which(cc) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("int main(void) { return 0; }\n")
        probe = subprocess.run([cc, *flags, "-c", src, "-o", os.path.join(tmp, "probe.o")],
                               capture_output=True)
    return probe.returncode == 0


@contextlib.contextmanager
def _kernel_cflags() -> Iterator[None]:
    flags = native_flags()
    old = os.environ.get("CFLAGS")
    if flags:
        os.environ["CFLAGS"] = " ".join([old or "", *flags]).strip()
    print(f"hydra: building kernels with {' '.join(flags) or 'baseline (portable)'} flags", file=sys.stderr)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CFLAGS", None)
        else:
            os.environ["CFLAGS"] = old


def build_wheel(*args: Any, **kwargs: Any) -> str:
    with _kernel_cflags():
        return _setuptools.build_wheel(*args, **kwargs)


def build_editable(*args: Any, **kwargs: Any) -> str:
    with _kernel_cflags():
        return _setuptools.build_editable(*args, **kwargs)
