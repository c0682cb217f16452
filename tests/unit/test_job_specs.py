"""Validation of job specifications: bad input gets a clear error; good input is normalised."""

from __future__ import annotations

import time

import pytest

from hydra_tasks.errors import InvalidJobSpec
from hydra_tasks.jobs.spec import parse_job_spec
from hydra_tasks.models import JobKind


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "must be a JSON object"),
        ({"kind": "sha256"}, "Unknown job kind 'sha256'"),
        ({"params": {"samples": 10}}, "Unknown job kind None"),
        ({"kind": "pi", "params": {}}, "Missing required field 'samples'"),
        ({"kind": "pi", "params": {"samples": -5}}, "out of range"),
        ({"kind": "pi", "params": {"samples": 0}}, "out of range"),
        ({"kind": "pi", "params": {"samples": 1e20}}, "out of range"),
        ({"kind": "pi", "params": {"samples": "1000"}}, "must be an integer, got str"),
        ({"kind": "pi", "params": {"samples": True}}, "must be an integer, got bool"),
        ({"kind": "pi", "params": {"samples": 10.5}}, "whole number"),
        ({"kind": "pi", "params": {"samples": 10, "seed": -1}}, "'seed'=-1 is out of range"),
        ({"kind": "pi", "params": {"samples": 10, "sedd": 1}}, "Unknown field(s) in π params: sedd"),
        ({"kind": "pi", "params": {"samples": 10, "generator": "mt19937"}}, "generator must be one of 'splitmix64', "
                                                                             "'philox4x32-10'; got 'mt19937'"),
        ({"kind": "pi", "params": {"samples": 10, "generator": 2}}, "generator must be one of"),
        ({"kind": "pi", "params": {"samples": 10}, "priority": 11}, "'priority'=11"),
        ({"kind": "pi", "params": {"samples": 10}, "colour": "red"}, "Unknown field(s) in the job specification"),
        ({"kind": "pi", "params": "samples=10"}, "'params' must be a JSON object"),
        ({"kind": "mandelbrot", "params": {"width": 0}}, "'width'=0 is out of range"),
        ({"kind": "mandelbrot", "params": {"width": 16384, "height": 16384}}, "exceeds the limit"),
        ({"kind": "mandelbrot", "params": {"max_iter": 0}}, "'max_iter'=0"),
        ({"kind": "mandelbrot", "params": {"colouring": "rainbow"}}, "'colouring'='rainbow' is unknown"),
        ({"kind": "mandelbrot", "params": {"xmin": -2, "xmax": 1}}, "Bounds need all of"),
        ({"kind": "mandelbrot", "params": {"xmin": 1, "xmax": -2, "ymin": -1, "ymax": 1}}, "Empty view"),
        ({"kind": "mandelbrot", "params": {"xmin": -2, "xmax": 1, "ymin": -1, "ymax": 1, "span": 2}}, "not both"),
        ({"kind": "mandelbrot", "params": {"span": 1e-15}}, "too deep a zoom"),
        ({"kind": "mandelbrot", "params": {"center_x": float("nan")}}, "out of range"),
        ({"kind": "pi", "params": {"samples": 10}, "deadline": "tomorrow"}, "not ISO-8601"),
        ({"kind": "pi", "params": {"samples": 10}, "deadline": "2020-01-01T00:00:00+00:00"}, "in the future"),
        ({"kind": "pi", "params": {"samples": 10}, "deadline": "2099-01-01T00:00:00"}, "no timezone"),
    ],
)
def test_bad_specs_are_rejected_with_a_message_that_names_the_problem(raw: object, message: str) -> None:
    with pytest.raises(InvalidJobSpec) as info:
        parse_job_spec(raw)
    assert message in str(info.value)


def test_a_pi_spec_accepts_scientific_notation_and_records_a_seed() -> None:
    spec = parse_job_spec({"kind": "pi", "params": {"samples": 1e9}})
    assert spec.kind is JobKind.PI
    assert spec.params["samples"] == 1_000_000_000 and isinstance(spec.params["samples"], int)
    assert 0 <= spec.params["seed"] < 2**64
    assert spec.priority == 5
    assert spec.params["generator"] == "philox4x32-10"  # recorded, so the job reproduces whatever the default becomes


def test_a_pi_job_names_its_generator_in_every_chunk_and_an_old_job_keeps_splitmix64() -> None:
    from hydra_tasks.jobs import pi

    spec = parse_job_spec({"kind": "pi", "params": {"samples": 100, "seed": 3, "generator": "splitmix64"}})
    assert pi.cut("j", spec.params, "c0", 0, 50).params["generator"] == "splitmix64"
    stored_before_generators = {"samples": 100, "seed": 3}  # a job record written before the field existed
    chunk = pi.cut("j", stored_before_generators, "c0", 10, 40)
    assert chunk.params["generator"] == "splitmix64"
    from hydra_tasks import compute

    assert pi.compute(chunk)["hits"] == compute.pi_hits(3, 10, 40, generator="splitmix64")


def test_a_mandelbrot_centre_and_span_become_bounds_with_square_pixels() -> None:
    spec = parse_job_spec({"kind": "mandelbrot", "params": {"width": 400, "height": 200, "center_x": -0.5,
                                                             "center_y": 0.25, "span": 2.0}})
    p = spec.params
    assert (p["xmin"], p["xmax"]) == (-1.5, 0.5)
    assert (p["ymin"], p["ymax"]) == (-0.25, 0.75)
    assert p["dx"] == p["dy"] == 2.0 / 400


def test_a_deadline_in_iso_8601_becomes_unix_seconds() -> None:
    future = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 3600))
    spec = parse_job_spec({"kind": "pi", "params": {"samples": 10}, "deadline": future})
    assert spec.deadline_ts is not None and abs(spec.deadline_ts - (time.time() + 3600)) < 5


def test_a_delay_weight_is_stored_with_a_deadline_and_refused_without_one() -> None:
    spec = parse_job_spec({"kind": "pi", "params": {"samples": 10}, "deadline": "+6h", "delay_weight": 12.5})
    assert spec.delay_weight == 12.5 and spec.to_json()["delay_weight"] == 12.5
    assert parse_job_spec({"kind": "pi", "params": {"samples": 10}, "deadline": "+6h"}).delay_weight == 0.0
    with pytest.raises(InvalidJobSpec, match="only a job with a 'deadline' waits"):
        parse_job_spec({"kind": "pi", "params": {"samples": 10}, "delay_weight": 5})
    for bad in (-1, "fast", 1e9, float("nan")):
        with pytest.raises(InvalidJobSpec, match="delay_weight"):
            parse_job_spec({"kind": "pi", "params": {"samples": 10}, "deadline": "+6h", "delay_weight": bad})
