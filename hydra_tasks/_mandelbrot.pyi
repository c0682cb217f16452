"""Type stub for the Cython extension built from kernels/mandelbrot.pyx."""

from typing import Any

def fill_counts(out: Any, xmin: float, ymax: float, dx: float, dy: float, col0: int, row0: int,
                max_iter: int) -> None: ...
