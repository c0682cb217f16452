"""Type stub for the Cython extension built from kernels/pi.pyx."""

ISA: str

def count_hits(seed: int, start: int, count: int) -> int: ...
