"""Mandelbrot rendering: validate, plan tiles, compute, verify, and assemble the image.

Pixel (row, col) of the image samples c = (xmin + (col+0.5)·dx) + i·(ymax − (row+0.5)·dy),
computed the same way for every tile, so a tiled render equals a whole-image render bit for bit.
"""

from __future__ import annotations

import base64
import json
import random
import zlib
from typing import Any, Mapping

import numpy as np
import redis

from .. import compute as kernels
from ..errors import InvalidJobSpec, ResultRejected, SpotCheckFailed
from ..keys import is_audit_chunk
from ..imaging import render_png
from ..models import ChunkSpec, Finalized, JobKind
from ..settings import Settings
from ..worker.throttle import Throttle
from . import tiling
from .validate import integer, number, reject_unknown

CUTS_LAZILY = False  # tiles are planned up front, or cut from the preview
MAX_SIDE = 16_384
MAX_PIXELS = 50_000_000
MAX_ITER = 1_000_000
COORD_LIMIT = 16.0
DEFAULT_VIEW = {"center_x": -0.75, "center_y": 0.0, "span": 3.5}


COLOURINGS = ("smooth", "bands")
_RNG = random.SystemRandom()  # spot checks are picked from the OS's randomness: no worker can predict them


def encode_array(values: np.ndarray, dtype: str = "<u4") -> str:
    """A 4-byte array -> base64(zlib(little-endian bytes)), the wire and storage format."""
    return base64.b64encode(zlib.compress(np.ascontiguousarray(values, dtype=dtype).tobytes(), 1)).decode()


def decode_array(text: str, height: int, width: int, dtype: str = "<u4") -> np.ndarray:
    expected = 4 * height * width
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(base64.b64decode(text, validate=True), expected + 1)  # never inflate a bomb
    except (ValueError, zlib.error) as exc:
        raise ResultRejected(f"Mandelbrot tile data is not base64 zlib data ({exc}).") from None
    if inflater.unconsumed_tail or len(raw) != expected:
        raise ResultRejected(f"Mandelbrot tile data holds {len(raw)} bytes; expected {4 * height * width}.")
    return np.frombuffer(raw, dtype=dtype).reshape(height, width)


def encode_counts(counts: np.ndarray) -> str:
    return encode_array(counts, "<u4")


def decode_counts(text: str, height: int, width: int) -> np.ndarray:
    return decode_array(text, height, width, "<u4")


def parse_params(raw: Mapping[str, Any]) -> dict[str, Any]:
    bounds = {"xmin", "xmax", "ymin", "ymax"}
    centre = {"center_x", "center_y", "span"}
    reject_unknown(raw, {"width", "height", "max_iter", "colouring"} | bounds | centre, "Mandelbrot params")
    colouring = raw.get("colouring", "smooth")
    if colouring not in COLOURINGS:
        raise InvalidJobSpec(f"'colouring'={colouring!r} is unknown; use one of: {', '.join(COLOURINGS)}.")
    width = integer(raw, "width", 1, MAX_SIDE, default=800)
    height = integer(raw, "height", 1, MAX_SIDE, default=600)
    if width * height > MAX_PIXELS:
        raise InvalidJobSpec(f"{width}x{height} = {width * height} pixels exceeds the limit of {MAX_PIXELS}.")
    max_iter = integer(raw, "max_iter", 1, MAX_ITER, default=256)
    given_bounds, given_centre = bounds & raw.keys(), centre & raw.keys()
    if given_bounds and given_centre:
        raise InvalidJobSpec("Give either xmin/xmax/ymin/ymax or center_x/center_y/span, not both.")
    if given_bounds:
        if given_bounds != bounds:
            raise InvalidJobSpec(f"Bounds need all of xmin, xmax, ymin, ymax; missing {sorted(bounds - given_bounds)}.")
        xmin, xmax, ymin, ymax = (number(raw, k, -COORD_LIMIT, COORD_LIMIT) for k in ("xmin", "xmax", "ymin", "ymax"))
    else:
        view = {**DEFAULT_VIEW, **raw}
        cx = number(view, "center_x", -COORD_LIMIT, COORD_LIMIT)
        cy = number(view, "center_y", -COORD_LIMIT, COORD_LIMIT)
        span = number(view, "span", 1e-300, 2 * COORD_LIMIT)
        xmin, xmax = cx - span / 2, cx + span / 2
        ymin, ymax = cy - span * height / width / 2, cy + span * height / width / 2
    if not (xmin < xmax and ymin < ymax):
        raise InvalidJobSpec(f"Empty view: need xmin < xmax and ymin < ymax (got x {xmin}..{xmax}, y {ymin}..{ymax}).")
    dx, dy = (xmax - xmin) / width, (ymax - ymin) / height
    resolution = 2.0**-46 * max(abs(xmin), abs(xmax), abs(ymin), abs(ymax), 1.0)
    if min(dx, dy) < resolution:
        raise InvalidJobSpec("The view is too deep a zoom for double precision; widen it (pixel size < 2^-46).")
    view_given = {} if given_bounds else {"center_x": cx, "center_y": cy, "span": span}  # as the user gave them
    return {"width": width, "height": height, "max_iter": max_iter, "xmin": xmin, "xmax": xmax,
            "ymin": ymin, "ymax": ymax, "dx": dx, "dy": dy, "colouring": colouring, **view_given}


#: Parameters derived from the ones a user gives (not shown as theirs).
DERIVED = frozenset({"dx", "dy"})
CENTRE = frozenset({"center_x", "center_y", "span"})


def given_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters as the user gave them: the centre and span when the view was given that way
    (not the bounds computed from them, with their float noise), else the bounds."""
    hidden = DERIVED | ({"xmin", "xmax", "ymin", "ymax"} if CENTRE <= params.keys() else set())
    return {k: v for k, v in params.items() if k not in hidden}


def units_total(params: Mapping[str, Any]) -> int:
    return int(params["width"]) * int(params["height"])


def chunk_count(params: Mapping[str, Any], settings: Settings) -> int:
    if settings.adaptive:
        return 1  # the preview; cost-balanced tiles are cut from it (jobs/tiling.py)
    side = settings.tile_px
    return -(-int(params["width"]) // side) * -(-int(params["height"]) // side)


def cut(job_id: str, params: Mapping[str, Any], chunk_id: str, start: int, count: int) -> ChunkSpec | None:
    return None  # tiles are planned up front, or from the preview


def work_done(chunk: ChunkSpec, payload: Mapping[str, Any]) -> float:
    return float(payload.get("work", 0))  # iterations actually done (escape checks skip some)


def reward_work(chunk: ChunkSpec, increments: Mapping[str, int]) -> float:
    return float(increments.get("iterations", 0))  # counted from the verified counts


def after_merge(client: redis.Redis, settings: Settings, chunk: ChunkSpec) -> None:
    """Once the preview is in, cut the job's cost-balanced tiles from it."""
    if chunk.params.get("preview"):
        from .preview import plan_tiles_after_preview

        plan_tiles_after_preview(client, settings, chunk.job_id)


def plan(job_id: str, params: Mapping[str, Any], settings: Settings) -> list[ChunkSpec]:
    """Adaptive: only the preview chunk (tiles follow from its cost map). Static
    (``HYDRA_ADAPTIVE=false``): square tiles of ``settings.tile_px`` in row-major order."""
    if settings.adaptive:
        return [tiling.preview_chunk(job_id, params)]
    width, height, side = int(params["width"]), int(params["height"]), settings.tile_px
    common = {k: params[k] for k in ("xmin", "ymax", "dx", "dy", "max_iter")}
    common["smooth"] = params.get("colouring", "smooth") == "smooth"
    chunks: list[ChunkSpec] = []
    for row0 in range(0, height, side):
        for col0 in range(0, width, side):
            h, w = min(side, height - row0), min(side, width - col0)
            chunks.append(ChunkSpec(job_id, f"t{len(chunks):06d}", JobKind.MANDELBROT,
                                    {**common, "row0": row0, "col0": col0, "width": w, "height": h}, units=w * h))
    return chunks


def _geometry(p: Mapping[str, Any]) -> dict[str, Any]:
    return {"xmin": float(p["xmin"]), "ymax": float(p["ymax"]), "dx": float(p["dx"]), "dy": float(p["dy"]),
            "col0": int(p["col0"]), "row0": int(p["row0"]), "max_iter": int(p["max_iter"])}


def compute(chunk: ChunkSpec, *, threads: int = 1, throttle: Throttle | None = None) -> dict[str, Any]:
    p = chunk.params
    geometry = _geometry(p)
    width, height = int(p["width"]), int(p["height"])
    counts = np.empty((height, width), dtype=np.uint32)
    work = np.empty((height, width), dtype=np.uint32)

    def band(offset: int, rows: int) -> None:  # row bands add up to the tile exactly
        counts[offset:offset + rows] = kernels.mandelbrot_counts(
            **{**geometry, "row0": geometry["row0"] + offset}, width=width, height=rows, threads=threads,
            work=work[offset:offset + rows])

    (throttle or Throttle()).run_sliced(height, band)
    payload: dict[str, Any] = {"counts": encode_counts(counts), "iterations": kernels.mandelbrot_iterations(counts),
                               "work": kernels.mandelbrot_iterations(work)}
    if p.get("preview"):
        payload["work_map"] = encode_array(work)
    if p.get("smooth"):
        payload["smooth"] = encode_array(kernels.mandelbrot_smooth(counts, **geometry), "<f4")
    return payload


def verify(chunk: ChunkSpec, payload: Mapping[str, Any]) -> dict[str, int]:
    p = chunk.params
    text, iterations = payload.get("counts"), payload.get("iterations")
    if not isinstance(text, str) or not isinstance(iterations, int) or isinstance(iterations, bool):
        raise ResultRejected(f"Mandelbrot tile {chunk.chunk_id}: expected 'counts' (str) and 'iterations' (int).")
    counts = decode_counts(text, int(p["height"]), int(p["width"]))
    work = payload.get("work")
    if not isinstance(work, int) or isinstance(work, bool):
        raise ResultRejected(f"Mandelbrot tile {chunk.chunk_id}: 'work' must be an integer.")
    if p.get("smooth") and not isinstance(payload.get("smooth"), str):
        raise ResultRejected(f"Mandelbrot tile {chunk.chunk_id}: expected smooth colouring values.")
    # From here on the result has the right shape, and values no honest kernel gives prove it wrong.
    if counts.size and int(counts.max()) > int(p["max_iter"]):
        raise SpotCheckFailed(f"Mandelbrot tile {chunk.chunk_id}: a count exceeds max_iter={p['max_iter']}.")
    if int(counts.sum(dtype=np.uint64)) != iterations:
        raise SpotCheckFailed(f"Mandelbrot tile {chunk.chunk_id}: 'iterations' does not match the counts.")
    if not 0 <= work <= iterations:
        raise SpotCheckFailed(f"Mandelbrot tile {chunk.chunk_id}: 'work' is outside [0, iterations].")
    if p.get("preview"):
        work_map = decode_array(str(payload.get("work_map", "")), int(p["height"]), int(p["width"]))
        if (work_map > counts).any():
            raise SpotCheckFailed(f"Mandelbrot preview {chunk.chunk_id}: a pixel's work exceeds its count.")
        return {"units_done": 0, "iterations": 0}  # the preview only guides tiling
    if p.get("smooth"):
        _verify_smooth(chunk, payload.get("smooth"), counts)
    return {"units_done": int(counts.size), "iterations": iterations}


def spot_check(chunk: ChunkSpec, payload: Mapping[str, Any], *, picks: int,
               rng: random.SystemRandom = _RNG) -> int:
    """Recompute one whole row and ``picks`` single pixels of the tile, chosen now (unpredictably for
    the worker), and compare their iteration counts exactly with the result (``verify`` ran first);
    SpotCheckFailed on a mismatch. Returns the pixels recomputed (the audit's cost)."""
    p = chunk.params
    geometry = _geometry(p)
    width, height = int(p["width"]), int(p["height"])
    counts = decode_counts(str(payload["counts"]), height, width)
    row = rng.randrange(height)
    got = kernels.mandelbrot_counts(**{**geometry, "row0": geometry["row0"] + row}, width=width, height=1)
    if not np.array_equal(got[0], counts[row]):
        col = int(np.flatnonzero(got[0] != counts[row])[0])
        raise SpotCheckFailed(f"Mandelbrot tile {chunk.chunk_id}: row {row} differs from the kernel's "
                              f"(first at column {col}).")
    for _ in range(picks):
        r, c = rng.randrange(height), rng.randrange(width)
        one = kernels.mandelbrot_counts(**{**geometry, "row0": geometry["row0"] + r, "col0": geometry["col0"] + c},
                                        width=1, height=1)
        if int(one[0, 0]) != int(counts[r, c]):
            raise SpotCheckFailed(f"Mandelbrot tile {chunk.chunk_id}: pixel ({r}, {c}) has count {int(counts[r, c])} "
                                  f"in the result, {int(one[0, 0])} from the kernel.")
    return width + picks


def _verify_smooth(chunk: ChunkSpec, text: Any, counts: np.ndarray) -> None:
    """Smooth values must be NaN exactly inside the set and within a few units of the count elsewhere."""
    if not isinstance(text, str):
        raise ResultRejected(f"Mandelbrot tile {chunk.chunk_id}: expected smooth colouring values.")
    height, width = counts.shape
    smooth = decode_array(text, height, width, "<f4")
    inside = counts == int(chunk.params["max_iter"])
    outside = smooth[~inside]
    if not np.isnan(smooth[inside]).all() or not np.isfinite(outside).all() or \
            (outside.size and float(np.abs(outside - counts[~inside]).max()) > 8.0):
        raise SpotCheckFailed(f"Mandelbrot tile {chunk.chunk_id}: smooth values do not match the counts.")


def assemble(params: Mapping[str, Any], parts: Mapping[str, str], chunks: Mapping[str, str],
             field: str = "counts") -> np.ndarray:
    """Place every merged tile's ``counts`` (uint32) or ``smooth`` (float32) into one image array."""
    dtype = "<u4" if field == "counts" else "<f4"
    image = np.zeros((int(params["height"]), int(params["width"])), dtype=dtype)
    for chunk_id, part in _kept_first(parts):
        tile = json.loads(chunks[chunk_id])["params"]
        if tile.get("preview"):
            continue
        r, c, h, w = (int(tile[k]) for k in ("row0", "col0", "height", "width"))
        image[r:r + h, c:c + w] = decode_array(json.loads(part)[field], h, w, dtype)
    return image


def _kept_first(parts: Mapping[str, str]) -> list[tuple[str, str]]:
    """The parts in drawing order: a re-opened job's kept image first, so the recomputed tiles cover it."""
    from . import KEPT

    return sorted(parts.items(), key=lambda item: item[0] != KEPT)


def partial_counts(params: Mapping[str, Any], parts: Mapping[str, str], chunks: Mapping[str, str]) -> np.ndarray:
    """A running job's image so far: the tiles merged, over the preview scaled up (each preview sample
    stands for its stride × stride block) where no tile is in yet; zero where neither is."""
    height, width = int(params["height"]), int(params["width"])
    image = np.zeros((height, width), dtype="<u4")
    if "preview" in parts and "preview" in chunks:
        p = json.loads(chunks["preview"])["params"]
        s = int(p["stride"])
        coarse = decode_counts(json.loads(parts["preview"])["counts"], int(p["height"]), int(p["width"]))
        image[:, :] = np.repeat(np.repeat(coarse, s, axis=0), s, axis=1)[:height, :width]
    tiles = {c: part for c, part in parts.items() if c != "preview" and not is_audit_chunk(c) and c in chunks}
    for chunk_id, part in _kept_first(tiles):
        tile = json.loads(chunks[chunk_id])["params"]
        r, c, h, w = (int(tile[k]) for k in ("row0", "col0", "height", "width"))
        image[r:r + h, c:c + w] = decode_counts(json.loads(part)["counts"], h, w)
    return image


def finalize(params: Mapping[str, Any], parts: Mapping[str, str], chunks: Mapping[str, str]) -> Finalized:
    counts = assemble(params, parts, chunks)
    max_iter = int(params["max_iter"])
    smooth = assemble(params, parts, chunks, "smooth") if params.get("colouring", "smooth") == "smooth" else None
    png = render_png(counts, max_iter, smooth=smooth)
    result = {
        "width": int(params["width"]), "height": int(params["height"]), "max_iter": max_iter,
        "bounds": [params["xmin"], params["xmax"], params["ymin"], params["ymax"]],
        "iterations": int(counts.sum(dtype=np.uint64)),
        "inside_fraction": float(np.count_nonzero(counts == max_iter) / counts.size),
        "png_bytes": len(png),
    }
    return Finalized(result, {"image": base64.b64encode(png).decode(), "counts": encode_counts(counts)})


def restore_parts(params: Mapping[str, Any], chunks: Mapping[str, str],
                  blobs: Mapping[str, str | None]) -> dict[str, str]:
    """Finalize keeps a finished job's counts and drops its tiles' parts; rebuild the parts of the
    given tiles from those counts, as the tiles' results held them (smooth values are a function of
    the counts; 'work' is unknown and set to its bound, the iterations). The preview is in no output
    and is not rebuilt."""
    text = blobs.get("counts")
    if not text:
        raise ResultRejected("the finished job has no counts to rebuild its tiles from")
    counts = decode_counts(text, int(params["height"]), int(params["width"]))
    parts: dict[str, str] = {}
    for chunk_id, spec_json in chunks.items():
        tile = ChunkSpec.from_json(json.loads(spec_json))
        p = tile.params
        if p.get("preview"):
            continue
        r, c, h, w = (int(p[k]) for k in ("row0", "col0", "height", "width"))
        block = np.ascontiguousarray(counts[r:r + h, c:c + w])
        iterations = kernels.mandelbrot_iterations(block)
        part: dict[str, Any] = {"counts": encode_counts(block), "iterations": iterations, "work": iterations,
                                "restored": True}
        if p.get("smooth"):
            part["smooth"] = encode_array(kernels.mandelbrot_smooth(block, **_geometry(p)), "<f4")
        parts[chunk_id] = json.dumps(part)
    return parts


def restore_kept(job_id: str, params: Mapping[str, Any], fields: Mapping[str, str],
                 suspect: Mapping[str, Mapping[str, Any]], blobs: Mapping[str, str | None]) -> dict[str, tuple[str, str]]:
    """The kept work of a compacted job is its whole finished image, drawn first; the recomputed suspect
    tiles are drawn over it (:func:`assemble`)."""
    from . import KEPT

    text = blobs.get("counts")
    if not text:
        raise ResultRejected("the finished job has no counts to rebuild its image from")
    width, height = int(params["width"]), int(params["height"])
    counts = decode_counts(text, height, width)
    p: dict[str, Any] = {k: params[k] for k in ("xmin", "ymax", "dx", "dy", "max_iter")}
    p.update(smooth=params.get("colouring", "smooth") == "smooth", row0=0, col0=0, width=width, height=height,
             kept=True)
    units = int(fields.get("units_done") or 0) - sum(int(f["units"]) for f in suspect.values())
    iterations = kernels.mandelbrot_iterations(counts)
    part: dict[str, Any] = {"counts": encode_counts(counts), "iterations": iterations, "work": iterations,
                            "restored": True}
    if p["smooth"]:
        part["smooth"] = encode_array(kernels.mandelbrot_smooth(counts, **_geometry(p)), "<f4")
    spec = ChunkSpec(job_id, KEPT, JobKind.MANDELBROT, p, units=max(units, 0))
    return {KEPT: (json.dumps(spec.to_json()), json.dumps(part))}
