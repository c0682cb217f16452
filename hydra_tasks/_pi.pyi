"""Type stub for the Cython extension built from kernels/pi.pyx."""

GENERATORS: tuple[str, ...]
VARIANTS: tuple[str, ...]
SUPPORTED: tuple[str, ...]
BEST: str

def count_hits(seed: int, start: int, count: int, generator: str, variant: str) -> int: ...

def philox4x32_10(counter: tuple[int, int, int, int], key: tuple[int, int]) -> tuple[int, int, int, int]: ...
