"""Turn Mandelbrot iteration counts into a colour PNG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Control points of the colour map (position in [0, 1] -> RGB), a "twilight ocean" gradient.
_STOPS = np.array([0.0, 0.16, 0.42, 0.6425, 0.8575, 1.0])
_COLOURS = np.array([
    [0, 7, 100], [32, 107, 203], [237, 255, 255], [255, 170, 0], [0, 2, 0], [0, 7, 100],
], dtype=np.float64)


def palette(size: int = 2048) -> np.ndarray:
    """A (size, 3) uint8 lookup table interpolated between the control points."""
    x = np.linspace(0.0, 1.0, size)
    lut = np.stack([np.interp(x, _STOPS, _COLOURS[:, ch]) for ch in range(3)], axis=1)
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


def colourize(counts: np.ndarray, max_iter: int, *, smooth: np.ndarray | None = None) -> np.ndarray:
    """(h, w) counts -> (h, w, 3) RGB. Points that never escaped are black. With ``smooth``
    (fractional escape values) the colours vary continuously instead of in bands."""
    lut = palette()
    values = counts.astype(np.float64) if smooth is None else np.nan_to_num(smooth.astype(np.float64), nan=0.0)
    scaled = np.log1p(np.maximum(values, 0.0)) / np.log1p(max(max_iter, 1))
    # Stretch so that typical escape counts spread over the whole palette.
    index = np.minimum((scaled * (len(lut) - 1)).astype(np.int64), len(lut) - 1)
    rgb = lut[index]
    rgb[counts >= max_iter] = 0
    return rgb


def render_png(counts: np.ndarray, max_iter: int, *, smooth: np.ndarray | None = None) -> bytes:
    """Encode the colourised counts as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(colourize(counts, max_iter, smooth=smooth)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()
