"""No job is cut into more than MAX_CHUNKS chunks, whatever its kind and mode; a job that would be is
refused at submission with the maximum and what to do instead.

Refusals happen before anything is stored: the app here points at a closed port, so a job that was
not refused would fail with a Redis connection error instead of InvalidJobSpec."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.errors import InvalidJobSpec
from hydra_tasks.jobs import tiling
from hydra_tasks.jobs.spec import parse_job_spec
from hydra_tasks.jobs.submit import submit_job
from hydra_tasks.scheduling.planner import MAX_CHUNKS, range_chunk_size
from hydra_tasks.settings import Settings
from support import free_port


def _app(**changes: Any) -> HydraCelery:
    return create_app(Settings().with_(redis_url=f"redis://127.0.0.1:{free_port()}/0", **changes))


def test_a_static_pi_job_needing_more_chunks_than_the_limit_is_refused_with_the_maximum() -> None:
    app = _app(adaptive=False, pi_chunk_samples=1_000_000)
    with pytest.raises(InvalidJobSpec) as info:
        submit_job(app, {"kind": "pi", "params": {"samples": 1e13}})  # 10^7 chunks of 10^6
    message = str(info.value)
    assert "10,000,000 chunks of HYDRA_PI_CHUNK_SAMPLES=1,000,000" in message
    assert f"limit {MAX_CHUNKS:,} chunks, so at most {MAX_CHUNKS * 1_000_000:,} samples" in message
    assert "split it into smaller jobs or raise HYDRA_PI_CHUNK_SAMPLES" in message
    with pytest.raises(InvalidJobSpec, match="would need 250,001 chunks"):
        submit_job(app, {"kind": "pi", "params": {"samples": MAX_CHUNKS * 1_000_000 + 1}})


@pytest.mark.parametrize("adaptive", [True, False])
def test_a_pi_job_above_the_sample_limit_is_refused_in_both_modes(adaptive: bool) -> None:
    app = _app(adaptive=adaptive, pi_chunk_samples=10**12)
    with pytest.raises(InvalidJobSpec) as info:
        submit_job(app, {"kind": "pi", "params": {"samples": 10**13 + 1}})
    assert "a π job holds at most 10,000,000,000,000 samples" in str(info.value)
    assert "split the work into several jobs" in str(info.value)


def test_a_static_mandelbrot_job_with_too_many_tiles_is_refused() -> None:
    app = _app(adaptive=False, tile_px=8)
    with pytest.raises(InvalidJobSpec) as info:  # 875 x 875 tiles of 8 px
        submit_job(app, {"kind": "mandelbrot", "params": {"width": 7000, "height": 7000}})
    assert "765,625 chunks (limit 250,000)" in str(info.value) and "raise HYDRA_TILE_PX" in str(info.value)


@pytest.mark.parametrize("rate", [1.0, 1e3, 1e6])
def test_adaptive_range_chunks_of_the_largest_pi_job_stay_within_the_limit_on_any_worker(rate: float) -> None:
    """A worker that is (or claims to be) very slow gets chunks of at least 1/MAX_CHUNKS of the job."""
    settings = Settings().with_(adaptive=True)
    total = 10**13
    sizing = range_chunk_size(settings, worker_rate=rate, total_rate=rate, remaining=total, first=True,
                              units_total=total)
    assert sizing.units >= total / MAX_CHUNKS and sizing.rule == "max_chunks"
    tail = range_chunk_size(settings, worker_rate=rate, total_rate=rate, remaining=123, first=False,
                            units_total=total)
    assert tail.units == 123  # the last chunk is what is left


def test_static_range_chunks_stay_within_the_limit_when_the_dispatcher_has_smaller_chunk_settings() -> None:
    """The control worker's HYDRA_PI_CHUNK_SAMPLES may differ from the submitter's."""
    settings = Settings().with_(adaptive=False, pi_chunk_samples=1_000)
    sizing = range_chunk_size(settings, worker_rate=1e9, total_rate=1e9, remaining=10**13, first=False,
                              units_total=10**13)
    assert sizing.units == 10**13 // MAX_CHUNKS


@pytest.mark.parametrize("pattern", ["uniform", "noisy"])
def test_adaptive_mandelbrot_tiles_of_the_largest_image_stay_within_the_limit(pattern: str) -> None:
    spec = parse_job_spec({"kind": "mandelbrot", "params": {"width": 8192, "height": 6103, "max_iter": 1000}})
    params = spec.params
    stride = tiling.preview_stride(params["width"], params["height"])
    shape = (-(-params["height"] // stride), -(-params["width"] // stride))
    work = (np.full(shape, 1000) if pattern == "uniform"
            else np.random.default_rng(1).integers(0, 1000, shape)).astype(np.uint32)
    tiles = tiling.plan_tiles("job", params, work, stride, fleet_rate=1.0, slots=1000, target_s=0.05)
    assert 1 < len(tiles) <= MAX_CHUNKS
