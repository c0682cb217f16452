"""Bundles (issue 15): chunks far shorter than a control-plane round trip travel several to a message.

The first half drives the dispatcher and :func:`hydra_tasks.intake.handle` against a real Redis: a
worker that takes bundles gets whole bundles in a window that many times larger, a worker that does
not (an older volunteer, or ``HYDRA_BUNDLE_MAX=1``) gets its chunks one by one, a bundle's results
merge once each, and a RESULTS envelope that does not fit is dropped. The second half runs a real
stack whose near-empty chunks go through ``hydra.compute_bundle`` end to end.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from hydra_tasks import compute, intake, keys
from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.jobs import store
from hydra_tasks.jobs.submit import submit_job
from hydra_tasks.scheduling.dispatcher import dispatch
from hydra_tasks.scheduling.router import CapacityRouter
from hydra_tasks.trust import envelope
from hydra_tasks.trust.envelope import Action
from hydra_tasks.worker.compute import run_chunk
from support import running_stack, wait_for_job

pytestmark = pytest.mark.integration

SPEEDS = {"pi_samples_per_s": 5e7, "mandelbrot_iters_per_s": 5e7}  # a 1,000-sample chunk: 20 µs


class Sent:
    """What the dispatcher published: chunks alone and bundles, per worker."""

    def __init__(self) -> None:
        self.alone: list[tuple[str, dict[str, Any], int]] = []
        self.bundles: list[tuple[str, list[tuple[dict[str, Any], int]]]] = []

    def publish(self, chunk: dict[str, Any], attempt: int, worker_id: str, region: str) -> None:
        self.alone.append((worker_id, chunk, attempt))

    def publish_bundle(self, chunks: list[tuple[dict[str, Any], int]], worker_id: str, region: str) -> None:
        self.bundles.append((worker_id, list(chunks)))

    def sizes(self, worker_id: str) -> list[int]:
        return [len(b) for w, b in self.bundles if w == worker_id]


@pytest.fixture
def control(redis_only: HydraCelery) -> HydraCelery:
    redis_only.redis.flushdb()
    return create_app(redis_only.settings.with_(adaptive=False, pi_chunk_samples=1_000, bundle_s=0.05,
                                                bundle_max=16))


def register(app: HydraCelery, worker_id: str, key: SigningKey, *, takes_bundles: bool) -> None:
    facts = intake.worker_facts(worker_id, "eu-west", concurrency=1, speeds=SPEEDS, settings=app.settings, isa="t")
    if not takes_bundles:
        del facts["bundle_max"]  # a volunteer from before bundles: it says nothing about them
    assert intake.handle(app.redis, app.settings, envelope.seal(key, Action.REGISTER, facts),
                         publish=lambda *a: None) == "registered"


def dispatched(control: HydraCelery, workers: dict[str, bool], chunks: int, seed: int) -> tuple[
        dict[str, SigningKey], str, Sent, int]:
    """Register ``workers`` (id -> takes bundles), submit a π job of ``chunks`` 1,000-sample chunks and
    dispatch once: (their keys, the job id, what was published, chunks sent)."""
    signing = {wid: SigningKey.generate() for wid in workers}
    for wid, takes in workers.items():
        register(control, wid, signing[wid], takes_bundles=takes)
    job = submit_job(control, {"kind": "pi", "params": {"samples": 1_000 * chunks, "seed": seed}})
    sent = Sent()
    n = dispatch(control.redis, control.settings, CapacityRouter(), sent.publish, publish_bundle=sent.publish_bundle)
    return signing, job.id, sent, n


def results_of(chunks: list[tuple[dict[str, Any], int]], worker_id: str, key: SigningKey) -> list[dict[str, Any]]:
    return [run_chunk(chunk, attempt=attempt, worker_id=worker_id, region="eu-west", key=key)
            for chunk, attempt in chunks]


def test_short_chunks_go_in_whole_bundles_to_workers_that_take_them_and_alone_to_the_others(
        control: HydraCelery) -> None:
    signing, job_id, sent, n = dispatched(control, {"new@h": True, "old@h": False}, 100, 3)
    new_key = signing["new@h"]
    # An unconfirmed worker's window is 2 (HYDRA_INFLIGHT_PER_SLOT x 1 process); of bundles of 16, 32 chunks.
    assert sent.sizes("new@h") == [16, 16] and not [c for w, c, _ in sent.alone if w == "new@h"]
    assert [w for w, _, _ in sent.alone] == ["old@h", "old@h"] and sent.sizes("old@h") == []
    assert n == 34 and control.redis.scard(keys.worker_inflight("new@h")) == 32
    first = sent.bundles[0][1][0][0]
    assert control.redis.hget(keys.lease(job_id, first["chunk_id"]), "window") == "32"
    again = Sent()
    assert dispatch(control.redis, control.settings, CapacityRouter(), again.publish,
                    publish_bundle=again.publish_bundle) == 0  # every window is full

    # The first bundle's results come back in one envelope: each merges once, and the window that frees
    # is refilled with one whole bundle.
    refill = Sent()
    message = envelope.seal(new_key, Action.RESULTS,
                            {"worker_id": "new@h", "results": results_of(sent.bundles[0][1], "new@h", new_key)})
    outcome = intake.handle(control.redis, control.settings, message, publish=refill.publish,
                            publish_bundle=refill.publish_bundle)
    assert outcome == ", ".join(["merged"] * 16)
    assert refill.sizes("new@h") == [16] and refill.alone == []
    view = store.get_job(control.redis, job_id)
    assert view is not None and view.chunks_done == 16
    # The same envelope again (a redelivery, a replay): nothing counts twice.
    replayed = intake.handle(control.redis, control.settings, message, publish=refill.publish,
                             publish_bundle=refill.publish_bundle)
    assert "merged" not in replayed.split(", ")
    view = store.get_job(control.redis, job_id)
    assert view is not None and view.chunks_done == 16


def test_without_a_way_to_send_bundles_or_with_bundles_off_every_chunk_goes_alone(control: HydraCelery) -> None:
    key = SigningKey.generate()
    register(control, "new@h", key, takes_bundles=True)
    submit_job(control, {"kind": "pi", "params": {"samples": 1_000 * 100, "seed": 4}})
    for settings, bundles in ((control.settings, False), (control.settings.with_(bundle_s=0.0), True)):
        control.redis.delete(keys.worker_inflight("new@h"))
        sent = Sent()
        dispatch(control.redis, settings, CapacityRouter(), sent.publish,
                 publish_bundle=sent.publish_bundle if bundles else None)
        assert len(sent.alone) == 2 and sent.bundles == []


def test_a_results_envelope_that_does_not_fit_is_dropped_and_a_result_naming_another_worker_is_too(
        control: HydraCelery) -> None:
    signing, job_id, sent, _ = dispatched(control, {"new@h": True, "thief@h": True}, 40, 5)
    key, thief = signing["new@h"], signing["thief@h"]
    mine = next(b for w, b in sent.bundles if w == "new@h")
    honest = results_of(mine, "new@h", key)

    def send(signer: SigningKey, body: dict[str, Any]) -> str:
        return intake.handle(control.redis, control.settings, envelope.seal(signer, Action.RESULTS, body),
                             publish=lambda *a: None)

    assert send(thief, {"worker_id": "new@h", "results": honest}) == "dropped: wrong worker"
    for bad in ("x", [], [{}] * (intake.MAX_RESULTS + 1), None):
        assert send(key, {"worker_id": "new@h", "results": bad}) == "dropped: malformed", bad
    # Inside a bundle, a result that names another worker (or is no object) is dropped; the rest merge.
    stolen = {**honest[1], "worker_id": "thief@h"}
    out = send(key, {"worker_id": "new@h", "results": [honest[0], stolen, 7]})
    assert out == "merged, dropped: wrong worker, dropped: malformed"
    view = store.get_job(control.redis, job_id)
    assert view is not None and view.chunks_done == 1
    assert intake.dropped_counts(control.redis) == {"wrong worker": 2, "malformed": 5}


# --- a real stack ---------------------------------------------------------------------------------------
def test_a_job_of_near_empty_sealed_chunks_runs_in_bundles_end_to_end_beside_a_worker_that_takes_none(
        tmp_path: Path) -> None:
    # HYDRA_ENCRYPTION on: every chunk of a bundle is sealed to its worker, every result to the control plane.
    with running_stack(tmp_path, {"eu-west": 1}, pi_chunk_samples=1_000, adaptive=False, encryption=True) as stack:
        stack.start_region_worker("us-east", name="us-east-old", extra_env={"HYDRA_BUNDLE_MAX": "1"})
        stack.wait_for_workers(2, timeout_s=90)
        app = create_app(stack.child_settings())
        chunks, seed = 600, 11
        t0 = time.time()
        job = wait_for_job(app, submit_job(app, {"kind": "pi", "params": {"samples": 1_000 * chunks,
                                                                           "seed": seed}}).id, timeout_s=300)
        assert job.state == "done" and job.chunks_done == chunks
        assert job.result["hits"] == compute.pi_hits(seed, 0, 1_000 * chunks)  # each chunk counted exactly once
        assert intake.dropped_counts(app.redis) == {}  # every sealed result opened
        bundled = stack.procs["eu-west-1"].log_tail(100_000)
        alone = stack.procs["us-east-old"].log_tail(100_000)
        assert "hydra.compute_bundle[" in bundled
        assert "hydra.compute_bundle[" not in alone and "hydra.compute_chunk[" in alone
        merged_in_bundles = [line for line in stack.procs["intake"].log_tail(100_000).splitlines()
                             if "succeeded" in line and "'merged, merged" in line]
        assert merged_in_bundles, "no intake task merged a bundle"
        print(f"{chunks} near-empty chunks in {time.time() - t0:.1f} s; {len(merged_in_bundles)} bundles merged")
