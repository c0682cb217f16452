"""Type stub for the Cython extension built from kernels/mandelbrot.pyx."""

from typing import Any

ISA: str
LANES: int

def fill_counts(out: Any, xmin: float, ymax: float, dx: float, dy: float, col0: int, row0: int,
                max_iter: int, shortcuts: bool = ..., first: int = ..., step: int = ..., work: Any = ...) -> None: ...

def fill_smooth(out: Any, counts: Any, xmin: float, ymax: float, dx: float, dy: float, col0: int, row0: int,
                max_iter: int) -> None: ...
