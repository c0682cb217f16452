"""Type stub for the Cython extension built from kernels/mandelbrot.pyx."""

from typing import Any

VARIANTS: tuple[str, ...]
SUPPORTED: tuple[str, ...]
BEST: str

def lanes(variant: str) -> int: ...

def fill_counts(out: Any, xmin: float, ymax: float, dx: float, dy: float, col0: int, row0: int,
                max_iter: int, shortcuts: bool = ..., first: int = ..., step: int = ..., work: Any = ...,
                variant: str = ...) -> None: ...

def fill_smooth(out: Any, counts: Any, xmin: float, ymax: float, dx: float, dy: float, col0: int, row0: int,
                max_iter: int) -> None: ...
