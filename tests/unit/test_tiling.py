"""Cost-balanced tiling: tiles cover the image exactly once and balance estimated cost, not area."""

from __future__ import annotations

import numpy as np

from hydra_tasks.jobs import tiling
from hydra_tasks.jobs.spec import parse_job_spec


def cover(tiles: list[tuple[int, int, int, int, float]], height: int, width: int) -> np.ndarray:
    grid = np.zeros((height, width), dtype=int)
    for r0, r1, c0, c1, _ in tiles:
        grid[r0:r1, c0:c1] += 1
    return grid


def test_tiles_cover_every_pixel_exactly_once() -> None:
    rng = np.random.default_rng(1)
    work = rng.integers(0, 1000, size=(40, 53)).astype(np.uint32)
    costs = tiling.CostMap(work, 5, 263, 197)
    tiles = tiling.cut(costs, costs.total / 37)
    assert (cover(tiles, 197, 263) == 1).all()
    assert abs(sum(t[4] for t in tiles) - costs.total) / costs.total < 0.01  # estimates add up


def test_expensive_areas_get_small_tiles_and_cheap_areas_big_ones() -> None:
    work = np.full((64, 64), 2, dtype=np.uint32)
    work[:8, :8] = 5000  # a hot corner, like the boundary of the set
    costs = tiling.CostMap(work, 4, 256, 256)
    tiles = tiling.cut(costs, costs.total / 16)
    def tile_at(r: int, c: int) -> tuple[int, int, int, int, float]:
        return next(t for t in tiles if t[0] <= r < t[1] and t[2] <= c < t[3])

    area = lambda t: (t[1] - t[0]) * (t[3] - t[2])  # noqa: E731
    assert area(tile_at(4, 4)) * 8 <= area(tile_at(200, 200))
    splittable = [t for t in tiles if max(t[1] - t[0], t[3] - t[2]) >= 2 * tiling.MIN_SIDE]
    assert max(t[4] for t in splittable) <= costs.total / 16 * 1.0001


def test_the_preview_samples_pixel_centres_of_the_same_view() -> None:
    spec = parse_job_spec({"kind": "mandelbrot", "params": {"width": 1000, "height": 600, "max_iter": 100}})
    preview = tiling.preview_chunk("job", spec.params)
    p, s = preview.params, preview.params["stride"]
    assert p["width"] * p["height"] <= tiling.PREVIEW_SAMPLES and s == tiling.preview_stride(1000, 600)
    # Sample (r, c) sits at the centre of pixel (r*s + s//2, c*s + s//2).
    x_sample = p["xmin"] + (3 + 0.5) * p["dx"]
    x_pixel = spec.params["xmin"] + (3 * s + s // 2 + 0.5) * spec.params["dx"]
    assert abs(x_sample - x_pixel) < 1e-12


def test_planned_tiles_carry_their_estimated_cost_and_respect_the_slot_count() -> None:
    spec = parse_job_spec({"kind": "mandelbrot", "params": {"width": 320, "height": 240, "max_iter": 500}})
    work = np.full((60, 80), 100, dtype=np.uint32)
    tiles = tiling.plan_tiles("job", spec.params, work, 4, fleet_rate=1e12, slots=8, target_s=3.0)
    assert len(tiles) >= 24  # at least 3 per slot even when the fleet could do it all at once
    assert sum(t.units for t in tiles) == 320 * 240
    assert all(t.params["est_cost"] > 0 for t in tiles)


def test_a_compressed_bomb_is_refused_without_inflating_it() -> None:
    import base64
    import zlib

    import pytest

    from hydra_tasks.errors import ResultRejected
    from hydra_tasks.jobs.mandelbrot import decode_array

    bomb = base64.b64encode(zlib.compress(bytes(50_000_000), 9)).decode()  # 50 MB of zeros, ~50 kB packed
    with pytest.raises(ResultRejected, match="expected 400"):
        decode_array(bomb, 10, 10)
