"""Exact spot checks (issue 12, item 1): a π result commits to the hits of each of its 64 blocks and
the control plane recomputes blocks it picks afterwards; a Mandelbrot result is checked on a whole
row and single pixels. Fabricated values are caught exactly, not statistically."""

from __future__ import annotations

import random
from typing import Any, Callable

import numpy as np
import pytest

from hydra_tasks import compute as kernels
from hydra_tasks.errors import ResultRejected, SpotCheckFailed
from hydra_tasks.jobs import mandelbrot, pi
from hydra_tasks.models import ChunkSpec, JobKind
from hydra_tasks.worker.throttle import Throttle

SEED, START, COUNT = 20261202, 1_000_003, 640_007


def pi_chunk(count: int = COUNT) -> ChunkSpec:
    return ChunkSpec("j" * 16, "c1", JobKind.PI, {"seed": SEED, "start": START, "count": count,
                                                       "generator": "philox4x32-10"}, units=count)


def test_a_pi_result_commits_to_every_block_and_they_add_up_to_the_kernels_hits() -> None:
    payload = pi.compute(pi_chunk())
    bounds = pi.block_bounds(COUNT)
    assert len(payload["block_hits"]) == pi.BLOCKS == len(bounds) - 1 and bounds[-1] == COUNT
    assert payload["hits"] == sum(payload["block_hits"]) == kernels.pi_hits(SEED, START, COUNT)
    assert payload["block_hits"][5] == kernels.pi_hits(SEED, START + bounds[5], bounds[6] - bounds[5])
    # Throttled (a first slice of 2^20 samples ends inside block 13 of 5,000,003) or not, the same commitment.
    big = pi_chunk(5_000_003)
    assert pi.compute(big, throttle=Throttle(cpu_limit=50.0, sleep=lambda s: None)) == pi.compute(big)
    assert pi.compute(pi_chunk(5))["block_hits"] == [kernels.pi_hits(SEED, START + i, 1) for i in range(5)]


@pytest.mark.parametrize("count", [1, 5, 63, 64, 65, 640_007, 10**13 + 7])
def test_picked_blocks_and_their_samples_follow_the_block_bounds(count: int) -> None:
    bounds = pi.block_bounds(count)
    assert pi.block_count(count) == len(bounds) - 1
    chunk = pi_chunk(count)
    every = list(range(pi.block_count(count)))
    assert pi.block_samples(chunk, every) == count
    picked = pi.pick_blocks(chunk, 3, random.Random(count))
    assert len(set(picked)) == min(3, len(every)) and set(picked) <= set(every)
    assert pi.block_samples(chunk, picked) == sum(bounds[b + 1] - bounds[b] for b in picked)


def test_an_honest_result_passes_and_costs_two_blocks() -> None:
    payload = pi.compute(pi_chunk())
    pi.verify(pi_chunk(), payload)
    assert pi.spot_check(pi_chunk(), payload, picks=2) <= 2 * (COUNT // pi.BLOCKS + 1)


def catch_rate(check: Callable[[Any], int], trials: int) -> float:
    """The share of seeded spot checks that catch a result."""
    caught = 0
    for trial in range(trials):
        try:
            check(random.Random(trial))
        except SpotCheckFailed:
            caught += 1
    return caught / trials


def _fabricated(payload: dict[str, Any], blocks: list[int]) -> dict[str, Any]:
    """Plausible counts: each changed block moves one hit to its neighbour, so the total is unchanged."""
    hits = list(payload["block_hits"])
    for b in blocks:
        hits[b] += 1
        hits[(b + 1) % len(hits)] -= 1
    return {**payload, "block_hits": hits}


def test_fabricated_blocks_are_caught_exactly_when_picked() -> None:
    honest = pi.compute(pi_chunk())
    every = _fabricated(honest, list(range(0, pi.BLOCKS, 2)))  # every block is off by one
    pi.verify(pi_chunk(), every)  # the shape and the total are plausible: only recomputing tells
    with pytest.raises(SpotCheckFailed, match="block"):
        pi.spot_check(pi_chunk(), every, picks=1)
    one = _fabricated(honest, [17])  # one block in 64 (and its neighbour) is wrong
    caught = catch_rate(lambda rng: pi.spot_check(pi_chunk(), one, picks=2, rng=rng), 400)
    assert 0.03 < caught < 0.12  # 2 picks of 64 blocks, 2 of them wrong: ~6% per result


def test_commitments_that_do_not_fit_the_chunk_are_rejected() -> None:
    honest = pi.compute(pi_chunk())
    for bad in ({**honest, "block_hits": honest["block_hits"][:-1]},
                {**honest, "block_hits": [*honest["block_hits"][:-1], -1]},
                {**honest, "block_hits": [float(h) for h in honest["block_hits"]]},
                {**honest, "hits": honest["hits"] + 1},
                {k: v for k, v in honest.items() if k != "block_hits"}):
        with pytest.raises(ResultRejected):
            pi.verify(pi_chunk(), bad)


def tile() -> ChunkSpec:
    params = {"xmin": -0.76, "ymax": 0.128, "dx": 0.03 / 64, "dy": 0.03 / 64, "col0": 8, "row0": 16,
              "width": 48, "height": 32, "max_iter": 2_000}
    return ChunkSpec("j" * 16, "t1", JobKind.MANDELBROT, params, units=48 * 32)


def test_a_mandelbrot_tile_with_one_altered_pixel_or_a_black_rectangle_is_caught() -> None:
    honest = mandelbrot.compute(tile())
    mandelbrot.verify(tile(), honest)
    assert mandelbrot.spot_check(tile(), honest, picks=4) == 48 + 4
    counts = mandelbrot.decode_counts(honest["counts"], 32, 48)
    black = np.full_like(counts, 2_000)  # "every pixel is inside the set"
    forged = {**honest, "counts": mandelbrot.encode_counts(black), "iterations": int(black.sum()),
              "work": int(black.sum())}
    mandelbrot.verify(tile(), forged)
    with pytest.raises(SpotCheckFailed):
        mandelbrot.spot_check(tile(), forged, picks=1)
    # One pixel altered: caught when its row is the row picked (1 in 32) or it is a picked pixel.
    altered = counts.copy()
    altered[7, 9] = counts[7, 9] + 1 if counts[7, 9] < 2_000 else counts[7, 9] - 1
    one = {**honest, "counts": mandelbrot.encode_counts(altered), "iterations": int(altered.sum())}
    assert 0 < catch_rate(lambda rng: mandelbrot.spot_check(tile(), one, picks=4, rng=rng), 320) < 0.2


def test_the_audit_share_falls_with_reputation_but_never_to_zero() -> None:
    from hydra_tasks.trust import reputation

    shares = [reputation.picks(JobKind.PI, r) for r in (0, 9, 10, 49, 50, 199, 200, 10**9)]
    assert shares == [32, 32, 8, 8, 4, 4, 2, 2]
    assert [reputation.picks(JobKind.MANDELBROT, r) for r in (0, 10, 50, 200)] == [512, 128, 32, 8]
    # After a catch anywhere, trust is earned at half speed; veterans well past it keep their rate.
    assert [reputation.picks(JobKind.PI, r, alert=True) for r in (19, 20, 399, 400)] == [32, 8, 4, 2]
