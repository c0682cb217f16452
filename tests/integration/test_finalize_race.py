"""Two finalizers of one job at once (the collector that merged the last chunk, the sweeper, a collector
of a late duplicate: all may see every unit in at the same moment, and do after a Redis restart) end it
once, and the result is the whole job's, whichever wins.

Found in the netns cluster (issue 14): a Mandelbrot job that ran across a kill -9 of Redis ended
``done`` with an image of zeros. One finalizer read the job live, another ended it and dropped its
per-tile parts, then the first read the (now empty) parts, assembled nothing and overwrote the result.
Here the interleaving is forced on a real Redis: a client that lets the other finalizer run to the end
just before it sends a given command.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest
import redis
from nacl.signing import SigningKey

from hydra_tasks import compute, keys
from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.jobs import collect, store
from hydra_tasks.jobs.mandelbrot import decode_counts
from hydra_tasks.jobs.spec import parse_job_spec
from hydra_tasks.ledger import book
from hydra_tasks.models import WorkerState
from hydra_tasks.scheduling import planner
from hydra_tasks.scheduling.dispatcher import dispatch
from hydra_tasks.scheduling.router import router_for
from hydra_tasks.trust import identity
from hydra_tasks.worker import registry
from hydra_tasks.worker.compute import run_chunk

pytestmark = pytest.mark.integration

PARAMS = {"width": 64, "height": 48, "max_iter": 300, "center_x": -0.745, "center_y": 0.11, "span": 0.06}


class CutIn(redis.Redis):
    """A client that runs ``cut_in`` once, just before it first sends a command ``when`` matches
    (alone or inside a pipeline)."""

    when: Callable[[tuple[Any, ...]], bool] = staticmethod(lambda args: False)
    cut_in: Callable[[], None] = staticmethod(lambda: None)
    fired = False

    def _maybe(self, args: tuple[Any, ...]) -> None:
        if not self.fired and self.when(args):
            self.fired = True
            self.cut_in()

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self._maybe(args)
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> redis.client.Pipeline:
        outer = self

        class _Pipeline(redis.client.Pipeline):
            def execute(self, raise_on_error: bool = True) -> list[Any]:
                for args, _ in self.command_stack:
                    outer._maybe(args)
                return super().execute(raise_on_error)

        return _Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


@pytest.fixture
def app(redis_only: HydraCelery) -> HydraCelery:
    redis_only.redis.flushdb()
    return create_app(redis_only.settings.with_(adaptive=False, tile_px=16))


def _all_merged_but_not_finalized(app: HydraCelery) -> str:
    """A Mandelbrot job with every tile merged, still live: an audit was pending when the last merged
    (finalize waits for it), and has just been settled."""
    r = app.redis
    key, now = SigningKey.generate(), time.time()
    registry.register(r, registry.WorkerInfo(
        worker_id="a@test", region="eu-north", host="test", pid=1, cores=2, concurrency=4, pi_samples_per_s=1e6,
        mandelbrot_iters_per_s=1e6, state=WorkerState.ONLINE, started_at=now, last_seen=now,
        public_key=identity.public_hex(key)))
    book.open_account(r, identity.public_hex(key))
    spec = parse_job_spec({"kind": "mandelbrot", "params": PARAMS})
    job_id = store.new_job_id()
    store.create_job(r, spec, planner.plan(job_id, spec, app.settings), job_id=job_id)
    r.hset(keys.job(job_id), "audits_pending", 1)
    for _ in range(100):
        registry.heartbeat(r, "a@test")
        sent: list[tuple[dict[str, Any], int]] = []
        dispatch(r, app.settings, router_for(app.settings, r), lambda c, a, w, reg: sent.append((c, a)))
        for chunk, attempt in sent:
            result = run_chunk(chunk, attempt=attempt, worker_id="a@test", region="eu-north", key=key)
            assert collect.collect(r, app.settings, result) == "merged"
        job = store.get_job(r, job_id)
        if job.units_done == job.units_total:
            break
    assert job.state == "running" and job.units_done == job.units_total == 64 * 48, job
    r.hset(keys.job(job_id), "audits_pending", 0)
    return job_id


def _check_result(app: HydraCelery, job_id: str) -> None:
    r = app.redis
    job = store.get_job(r, job_id)
    assert job.state == "done", job
    p = job.params
    whole = compute.mandelbrot_counts(xmin=p["xmin"], ymax=p["ymax"], dx=p["dx"], dy=p["dy"], col0=0, row0=0,
                                      width=p["width"], height=p["height"], max_iter=p["max_iter"])
    counts = decode_counts(r.get(keys.job_counts(job_id)), p["height"], p["width"])
    assert (counts == whole).all(), f"the stored counts differ from the image at {(counts != whole).sum()} pixels"
    assert job.result["iterations"] == int(whole.sum())
    assert not list(r.scan_iter(match="*:staged:*")), "a finalizer left staged blobs behind"
    assert not r.exists(keys.job_parts(job_id)), "the finished job kept its per-tile parts"


def _race(app: HydraCelery, job_id: str, when: Callable[[tuple[Any, ...]], bool]) -> tuple[bool, bool]:
    """Finalizer B runs; finalizer A cuts in just before B sends the command ``when`` matches. Returns
    (A ended the job, B ended the job)."""
    won: dict[str, bool] = {}
    late = CutIn(connection_pool=app.redis.connection_pool)
    late.when = when  # type: ignore[method-assign]
    late.cut_in = lambda: won.setdefault("a", collect.finalize(app.redis, job_id))  # type: ignore[method-assign]
    won["b"] = collect.finalize(late, job_id)
    assert late.fired, "the other finalizer never cut in: the test no longer forces the race"
    return won["a"], won["b"]


def test_a_finalizer_that_reads_after_another_ended_the_job_does_not_overwrite_its_result(
        app: HydraCelery) -> None:
    job_id = _all_merged_but_not_finalized(app)
    parts = keys.job_parts(job_id)
    a, b = _race(app, job_id, lambda args: args[:2] == ("HGETALL", parts))
    assert (a, b) == (True, False)
    _check_result(app, job_id)


def test_a_finalizer_that_loses_the_race_to_finish_drops_what_it_staged(app: HydraCelery) -> None:
    job_id = _all_merged_but_not_finalized(app)
    a, b = _race(app, job_id, lambda args: str(args[0]).upper() in ("EVALSHA", "EVAL"))
    assert (a, b) == (True, False)
    _check_result(app, job_id)


def test_a_finalizer_that_finds_the_job_ended_before_its_finish_drops_what_it_staged(app: HydraCelery) -> None:
    """A cuts in after B staged its blobs, before B's FINISH reads the job: B sees the job over and
    never calls the script, so it must drop its staged blobs itself."""
    job_id = _all_merged_but_not_finalized(app)
    job_key = keys.job(job_id)
    a, b = _race(app, job_id, lambda args: args[:2] == ("HMGET", job_key) and "dispatched" in args)
    assert (a, b) == (True, False)
    _check_result(app, job_id)
