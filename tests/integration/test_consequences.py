"""Issue 12, item 3: what follows a catch. A worker whose result fails a spot check loses everything
it returned since it was admitted: in running jobs its results are taken out and recomputed by
others, in finished jobs they are flagged (and recomputed when the operator re-opens the job), and
the tokens they earned are reversed by journal entries that `ledger verify` replays. No final
result keeps a value from it.

A spot check recomputes a sample of each result, so a subtle cheat (one block in 64) passes most of
them: these tests make the first results pass by asking for no picks (``reputation.picks`` returns
0), exactly what a lucky cheater gets, and then let a full-strength check catch it. Real Redis, the
real collect path and Lua scripts; results are built by the real kernel and then falsified."""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import numpy as np
import pytest
from nacl.signing import SigningKey

from hydra_tasks import compute, keys
from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.errors import JobStateError
from hydra_tasks.jobs import collect, mandelbrot, store
from hydra_tasks.ledger import audit, book
from hydra_tasks.models import payload_digest
from hydra_tasks.trust import identity, reputation
from hydra_tasks.trust import results as signed_results
from hydra_tasks.worker import registry
from hydra_tasks.worker.compute import run_chunk
from support import dispatch_in_process, keyed_worker, submit_planned

pytestmark = pytest.mark.integration

Sent = list[tuple[dict[str, Any], int, str]]


@pytest.fixture
def app(redis_only: HydraCelery) -> HydraCelery:
    redis_only.redis.flushdb()
    return create_app(redis_only.settings.with_(adaptive=False, pi_chunk_samples=1_000, tile_px=16))


@pytest.fixture
def lucky(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    """lucky(True): spot checks recompute no π block (a cheater's luck); lucky(False): the real policy."""
    real = reputation.picks

    def set_luck(on: bool) -> None:
        monkeypatch.setattr(reputation, "picks", (lambda kind, rep, alert=False: 0) if on else real)
    return set_luck


def submit(app: HydraCelery, raw: dict[str, Any]) -> str:
    return submit_planned(app, raw)


def send(app: HydraCelery) -> Sent:
    return dispatch_in_process(app)


def falsified(result: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    """A π result with one block (and so the total) one hit too high, signed by the cheater."""
    payload = dict(result["payload"])
    blocks = list(payload["block_hits"])
    blocks[7] += 1
    payload.update(block_hits=blocks, hits=payload["hits"] + 1)
    return signed_results.sign({**result, "payload": payload,
                                "digest": payload_digest(result["job_id"], result["chunk_id"], payload)}, key)


def earned(app: HydraCelery, key: SigningKey) -> int:
    return int(app.redis.hget(keys.LEDGER_EARNED, identity.public_hex(key)) or 0)


def run_all(app: HydraCelery, keys_by_worker: dict[str, SigningKey], job_ids: list[str], rounds: int = 50) -> None:
    """Honest workers compute whatever is sent to them until the jobs end."""
    for _ in range(rounds):
        if all(store.get_job(app.redis, j).is_final for j in job_ids):
            return
        for chunk, attempt, worker in send(app):
            result = run_chunk(chunk, attempt=attempt, worker_id=worker, region="r", key=keys_by_worker[worker])
            assert collect.collect(app.redis, app.settings, result) in ("merged", "duplicate", "ignored")
    raise AssertionError("the jobs did not finish")


def test_a_caught_workers_past_results_are_recomputed_flagged_and_unpaid(
        app: HydraCelery, lucky: Callable[[bool], None]) -> None:
    cheat_key = keyed_worker(app, "cheater@test")
    samples, seed = 4_000, 11
    truth = compute.pi_hits(seed, 0, samples)

    # Job A: the cheater alone, one chunk at a time; its lucky falsified results all pass and A finishes.
    done_job = submit(app, {"kind": "pi", "params": {"samples": samples, "seed": seed}})
    lucky(True)
    while not store.get_job(app.redis, done_job).is_final:
        for chunk, attempt, worker in send(app):
            assert worker == "cheater@test"
            honest = run_chunk(chunk, attempt=attempt, worker_id=worker, region="r", key=cheat_key)
            assert collect.collect(app.redis, app.settings, falsified(honest, cheat_key)) == "merged"
    finished = store.get_job(app.redis, done_job)
    assert finished.state.value == "done" and finished.result["hits"] == truth + 4  # four lucky wrong chunks
    # A Mandelbrot job it finishes with true values: a finished job holds its results all the same.
    image_job = submit(app, {"kind": "mandelbrot", "params": {"width": 48, "height": 32, "max_iter": 200}})
    run_all(app, {"cheater@test": cheat_key}, [image_job])
    reference_counts = app.redis.get(keys.job_counts(image_job))

    # Job B is running when it is caught: two lucky wrong chunks merge, then an honest worker joins.
    live_job = submit(app, {"kind": "pi", "params": {"samples": samples, "seed": seed}})
    pending: Sent = []
    while store.get_job(app.redis, live_job).chunks_done < 2:
        pending += send(app)
        chunk, attempt, worker = pending.pop(0)
        honest = run_chunk(chunk, attempt=attempt, worker_id=worker, region="r", key=cheat_key)
        assert collect.collect(app.redis, app.settings, falsified(honest, cheat_key)) == "merged"
    assert store.get_job(app.redis, live_job).chunks_done == 2
    claimed = earned(app, cheat_key)
    assert claimed > 0
    honest_key = keyed_worker(app, "honest@test")

    # Its luck runs out: the next falsified result is checked at full strength and caught.
    lucky(False)
    sent = send(app) + pending
    [(chunk, attempt, worker)] = [s for s in sent if s[2] == "cheater@test"][:1]
    honest = run_chunk(chunk, attempt=attempt, worker_id=worker, region="r", key=cheat_key)
    bad = falsified(honest, cheat_key)
    # Falsify every block so that any pick sees it (the hits stay consistent with the blocks).
    payload = dict(bad["payload"])
    payload["block_hits"] = [h + 1 if h < 15 else h - 1 for h in payload["block_hits"]]
    payload["hits"] = sum(payload["block_hits"])
    bad = signed_results.sign({**bad, "payload": payload,
                               "digest": payload_digest(bad["job_id"], bad["chunk_id"], payload)}, cheat_key)
    assert collect.collect(app.redis, app.settings, bad) == "rejected"
    cheat = registry.get_worker(app.redis, "cheater@test")
    assert cheat is not None and cheat.quarantined

    # Running job: its two merged results are out and queued again; its counters are back.
    job = store.get_job(app.redis, live_job)
    assert job.chunks_done == 0 and job.hits == 0 and job.units_done == 0 and job.recomputed == 2
    assert not app.redis.exists(keys.worker_results("cheater@test"))
    # Finished jobs: flagged, with how many suspect results.
    assert store.get_job(app.redis, done_job).suspect == 4
    assert store.get_job(app.redis, image_job).suspect == 6   # 48x32 in 16-px tiles
    # Tokens: all reversed by journal entries with the reason; the ledger replays them.
    assert earned(app, cheat_key) == 0
    assert int(app.redis.hget(keys.LEDGER_BALANCES, identity.public_hex(cheat_key))) == 0
    reversals = [f for _, f in audit.journal(app.redis) if f["type"] == "reversal"]
    assert len(reversals) == 4 + 6 + 2 and sum(int(f["amount"]) for f in reversals) == claimed
    assert all("cheater@test was caught cheating" in f["reason"] and f["from"] == identity.public_hex(cheat_key)
               for f in reversals)
    report = audit.verify(app.redis)
    assert report.ok and report.reversals == 12, report.problems

    # The honest worker finishes the running job: the exact count, and it is paid for the recomputes.
    for chunk, attempt, worker in sent:
        if worker == "honest@test":
            result = run_chunk(chunk, attempt=attempt, worker_id=worker, region="r", key=honest_key)
            assert collect.collect(app.redis, app.settings, result) == "merged"
    run_all(app, {"honest@test": honest_key}, [live_job])
    job = store.get_job(app.redis, live_job)
    assert job.state.value == "done" and job.result["hits"] == truth
    # Re-opening the finished jobs recomputes their suspect results: exact π, the same image.
    # The dashboard says so; re-opening over HTTP needs the operator token.
    from webapp import create_app as create_web

    web = create_web(app.settings.with_(api_token="op-token")).test_client()
    page = web.get(f"/jobs/{done_job}").get_data(as_text=True)
    assert "4 of its results came from a worker caught cheating" in page and f"hydra reopen {done_job}" in page
    assert web.get(f"/api/jobs/{done_job}").get_json()["suspect"] == 4
    security = web.get("/api/security_metrics").get_json()
    assert security["reversals"] == 12 and security["reversed_micro"] == claimed
    assert security["spot_checks"]["failed"] == 1 and security["spot_checks"]["last_caught_at"] > time.time() - 60
    assert web.post(f"/api/jobs/{done_job}/reopen").status_code == 401
    assert store.get_job(app.redis, done_job).state.value == "done"
    reopened = web.post(f"/api/jobs/{done_job}/reopen", headers={"Authorization": "Bearer op-token"})
    assert reopened.status_code == 200 and reopened.get_json()["state"] == "running"
    assert reopened.get_json()["hits"] == 0 and reopened.get_json()["units_done"] == 0  # all four were its
    assert store.reopen_job(app.redis, image_job).state.value == "running"
    run_all(app, {"honest@test": honest_key}, [done_job, image_job])
    redone = store.get_job(app.redis, done_job)
    assert redone.result["hits"] == truth and redone.suspect == 0 and redone.reopened == 1
    assert app.redis.get(keys.job_counts(image_job)) == reference_counts
    assert store.get_job(app.redis, image_job).iterations == int(
        mandelbrot.decode_counts(reference_counts, 32, 48).sum(dtype=np.uint64))
    with pytest.raises(JobStateError, match="no suspect results"):
        store.reopen_job(app.redis, done_job)
    report = audit.verify(app.redis)
    assert report.ok, report.problems
    supply = json.loads(json.dumps(book.token_metrics(app.redis)))
    assert supply["reversed_micro"] == claimed and supply["supply_micro"] == earned(app, honest_key)


def test_a_result_whose_values_contradict_each_other_catches_its_worker(app: HydraCelery) -> None:
    """Blocks that do not add up to the total are no honest kernel's output: caught like a failed
    spot check. A result of the wrong shape (as from a worker running older code) is only rejected."""
    key = keyed_worker(app, "w@test")
    submit(app, {"kind": "pi", "params": {"samples": 4_000, "seed": 2}})
    [(chunk, attempt, worker), *_] = send(app)
    honest = run_chunk(chunk, attempt=attempt, worker_id=worker, region="r", key=key)
    old_code = {k: v for k, v in honest["payload"].items() if k != "block_hits"}
    stale = signed_results.sign({**honest, "payload": old_code,
                                 "digest": payload_digest(honest["job_id"], honest["chunk_id"], old_code)}, key)
    assert collect.collect(app.redis, app.settings, stale) == "rejected"
    assert not registry.get_worker(app.redis, "w@test").quarantined  # type: ignore[union-attr]
    # A worker from before generators were named computes SplitMix64 whatever the chunk says, and says nothing:
    # its result is refused, not taken for cheating (its hits differ from the job's generator's).
    [(chunk, attempt, worker), *_] = send(app)
    assert chunk["params"]["generator"] == "philox4x32-10"
    honest = run_chunk(chunk, attempt=attempt, worker_id=worker, region="r", key=key)
    before_generators = {k: v for k, v in honest["payload"].items() if k != "generator"}
    stale = signed_results.sign({**honest, "payload": before_generators,
                                 "digest": payload_digest(honest["job_id"], honest["chunk_id"], before_generators)},
                                key)
    assert collect.collect(app.redis, app.settings, stale) == "rejected"
    assert not registry.get_worker(app.redis, "w@test").quarantined  # type: ignore[union-attr]
    [(chunk, attempt, worker), *_] = send(app)
    honest = run_chunk(chunk, attempt=attempt, worker_id=worker, region="r", key=key)
    payload = {**honest["payload"], "hits": honest["payload"]["hits"] + 1}  # the blocks no longer add up
    bad = signed_results.sign({**honest, "payload": payload,
                               "digest": payload_digest(honest["job_id"], honest["chunk_id"], payload)}, key)
    assert collect.collect(app.redis, app.settings, bad) == "rejected"
    caught = registry.get_worker(app.redis, "w@test")
    assert caught is not None and "do not add up" in caught.quarantined
