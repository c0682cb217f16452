"""Sealed payloads (HYDRA_ENCRYPTION) with real Redis and real worker processes: the same results as
in the clear, while the broker's queues and ``unacked`` hashes hold only ciphertext for chunk
parameters and results; tampered or plaintext payloads are refused and counted."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from nacl.signing import SigningKey

from hydra_tasks import compute, intake, keys
from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.jobs.submit import submit_job
from hydra_tasks.models import ChunkResult, payload_digest
from hydra_tasks.stack import LocalStack
from hydra_tasks.trust import envelope, results, sealing
from hydra_tasks.trust.envelope import Action
from support import require_redis7, running_stack, wait_for_job

pytestmark = pytest.mark.integration

SEED = 271_828_182_845            # digits that appear nowhere but in a π job's parameters
PI = {"kind": "pi", "params": {"samples": 1_600_000_000, "seed": SEED}}
MANDELBROT = {"kind": "mandelbrot", "params": {"width": 640, "height": 480, "max_iter": 1_777, "center_x": -0.743,
                                               "center_y": 0.131, "span": 0.02}}
# What must never be readable on the broker: parameter names and values, and result fields.
SECRETS = ("params", str(SEED), "max_iter", "1777", "xmin", "ymax", "samples", "block_hits", '"hits"', "counts",
           "iterations")
STATIC = dict(adaptive=False, pi_chunk_samples=100_000_000, tile_px=96)


class BrokerTap:
    """Polls every kombu queue list and unacked hash of a Redis, keeping each distinct message."""

    def __init__(self, client: Any) -> None:
        self.client, self.seen, self.stop = client, {}, threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self.stop.is_set():
            for key in self.client.scan_iter(count=1000):
                if key.startswith("hydra:") or key.startswith("_kombu") or key.startswith("celery"):
                    continue
                kind = self.client.type(key)
                if kind == "list":
                    raw = [(m, "queue") for m in self.client.lrange(key, 0, -1)]
                elif kind == "hash" and "unacked" in key and "index" not in key:
                    raw = [(json.loads(v)[0], "unacked") for v in self.client.hvals(key)]
                else:
                    continue
                for message, where in raw:
                    text = message if isinstance(message, str) else json.dumps(message)
                    self.seen.setdefault(text, (key, where))
            time.sleep(0.005)

    def __enter__(self) -> "BrokerTap":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)

    def messages(self) -> list[tuple[str, str, str, Any]]:
        """(queue key, where, task name, decoded args) for every task message seen, and the raw text
        with its body decoded into it."""
        out = []
        for text, (key, where) in self.seen.items():
            message = json.loads(text)
            body = base64.b64decode(message["body"]).decode()
            out.append((key, where, message["headers"]["task"], text + body))
        return out


def leaks(task: str, text: str) -> list[str]:
    """What a chunk or result message shows of SECRETS outside its ciphertext (every run of 40 or
    more base64 characters is cut out first, so a secret cannot match by chance inside a box, and a
    number must stand alone, not inside another number such as a time)."""
    if task not in ("hydra.compute_chunk", "hydra.compute_bundle") and not (
            task == "hydra.intake" and args_of(text)[0]["action"] in ("result", "results")):
        return []  # registrations and heartbeats carry no job data
    clear = re.sub(r"[A-Za-z0-9+/=]{40,}", "", text)
    # A number counts only as a whole number: "1777" inside a time such as 0.17779 or 1796177712.5 is chance.
    return [s for s in SECRETS if (re.search(rf"(?<![\d.]){s}(?![\d.])", clear) if s.isdigit() else s in clear)]


def args_of(text: str) -> list[Any]:
    """The task's positional arguments, from a tapped message (its decoded body follows the JSON)."""
    decoder = json.JSONDecoder()
    _, end = decoder.raw_decode(text)
    return decoder.raw_decode(text[end:])[0][0]


def run_jobs(stack: LocalStack) -> tuple[dict[str, Any], list[tuple[str, str, str, Any]]]:
    app = create_app(stack.child_settings())
    with BrokerTap(stack.client()) as tap:
        pi, mandelbrot = submit_job(app, PI), submit_job(app, MANDELBROT)
        pi_done, mandelbrot_done = wait_for_job(app, pi.id, timeout_s=180), wait_for_job(app, mandelbrot.id,
                                                                                          timeout_s=180)
    assert pi_done.state == mandelbrot_done.state == "done", (pi_done, mandelbrot_done)
    counts = app.redis.get(keys.job_counts(mandelbrot.id))
    return {"pi": pi_done.result, "counts": counts, "image": app.redis.get(keys.job_image(mandelbrot.id))}, \
        tap.messages()


@pytest.fixture(scope="module")
def in_the_clear(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[Any]]:
    with running_stack(tmp_path_factory.mktemp("clear"), {"eu-west": 1, "us-east": 1}, **STATIC) as stack:
        return run_jobs(stack)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory.mktemp("sealed"), {"eu-west": 1, "us-east": 1}, encryption=True,
                       **STATIC) as stack:
        yield stack


def test_sealed_jobs_give_bit_identical_results_while_the_broker_holds_only_ciphertext(
        in_the_clear: tuple[dict[str, Any], list[Any]], stack: LocalStack) -> None:
    clear, clear_messages = in_the_clear
    sealed, sealed_messages = run_jobs(stack)
    assert sealed == clear  # π hits and every Mandelbrot count, bit for bit, and the same PNG
    assert clear["pi"]["hits"] == compute.pi_hits(SEED, 0, PI["params"]["samples"])  # type: ignore[index]
    # The tap works: in the clear it reads the parameters of chunks waiting in queues and in unacked.
    clear_chunks = [m for m in clear_messages if m[2] == "hydra.compute_chunk"]
    assert {w for _, w, _, _ in clear_chunks} == {"queue", "unacked"}
    assert all(leaks(task, text) for _, _, task, text in clear_chunks)
    # Sealed: the same places hold chunks and results, and none shows a parameter or a result value.
    chunks = [m for m in sealed_messages if m[2] == "hydra.compute_chunk"]
    assert {w for _, w, _, _ in chunks} == {"queue", "unacked"} and len(chunks) >= 6, chunks
    assert {k for k, *_ in chunks} >= {"unacked"} and any(k.endswith(".dq2") for k, *_ in chunks)
    for key, where, task, text in sealed_messages:
        leaked = leaks(task, text)
        assert not leaked, f"{task} in {key} ({where}) shows {leaked}"
    for args in (args_of(text) for _, _, task, text in chunks):
        assert set(args[0]) == {"sealed", "job_id", "chunk_id", "box"}, args
    sent_results = [args_of(text)[0]["body"] for _, _, task, text in sealed_messages
                    if task == "hydra.intake" and args_of(text)[0]["action"] == "result"]
    assert all("sealed" in r and "payload" not in r for r in sent_results), sent_results
    app = create_app(stack.child_settings())
    assert intake.dropped_counts(app.redis) == {}


def test_a_chunk_tampered_with_on_the_broker_is_refused_by_the_worker_and_never_computed(
        stack: LocalStack) -> None:
    app = create_app(stack.child_settings())
    worker_id = next(w for w in app.redis.smembers(keys.WORKERS) if w.startswith("eu-west-1@"))
    chunk = {"job_id": "feedfacecafe0001", "chunk_id": "c0", "kind": "pi",
             "params": {"start": 0, "count": 1000, "seed": 1}, "units": 1000}
    message = sealing.seal_chunk_for(app.redis, app.settings, chunk, 1, worker_id)
    raw = bytearray(base64.b64decode(message["box"]))
    raw[40] ^= 0x01
    tampered = {**message, "box": base64.b64encode(bytes(raw)).decode()}
    app.send_task("hydra.compute_chunk", args=[tampered, 1, "eu-west"], queue=f"{worker_id}.dq2")
    stack.wait_for_log("eu-west-1", "refused chunk c0 of job feedfacecafe0001", timeout_s=30)
    assert "does not open" in stack.procs["eu-west-1"].log_tail(50)


@pytest.fixture(scope="module")
def redis_app(redis_only: HydraCelery) -> HydraCelery:
    redis_only.redis.flushdb()
    return create_app(redis_only.settings.with_(encryption=True))


def send(app: HydraCelery, message: object) -> str:
    return intake.handle(app.redis, app.settings, message, publish=lambda *a: None)


def facts(app: HydraCelery, worker_id: str, **changes: Any) -> dict[str, Any]:
    speeds = {"pi_samples_per_s": 5e7, "mandelbrot_iters_per_s": 5e7}
    return {**intake.worker_facts(worker_id, "eu-west", concurrency=1, speeds=speeds, settings=app.settings,
                                  isa="test"), **changes}


def test_with_encryption_on_the_intake_refuses_workers_and_results_that_are_not_sealed_to_it(
        redis_app: HydraCelery, tmp_path: Path) -> None:
    app, key = redis_app, SigningKey.generate()
    mine = sealing.control_public_hex(app.settings.data_dir)
    other = sealing.control_public_hex(tmp_path)  # another control plane's key (or an attacker's)
    assert send(app, envelope.seal(key, Action.REGISTER, facts(app, "w@h"))) == "dropped: unsealed"
    assert send(app, envelope.seal(key, Action.REGISTER, facts(app, "w@h", box_key=other))) == "dropped: unsealed"
    assert send(app, envelope.seal(key, Action.REGISTER, facts(app, "w@h", box_key=mine))) == "registered"
    result = results.sign(ChunkResult("0" * 16, "c0", "w@h", "eu-west", 1, 0.5, 0.5, {"hits": 3, "samples": 4},
                                      payload_digest("0" * 16, "c0", {"hits": 3, "samples": 4})).to_json(), key)
    assert send(app, envelope.seal(key, Action.RESULT, result)) == "dropped: unsealed"
    box = sealing.worker_box(key, mine)
    sealed = sealing.seal_result(box, result)
    raw = bytearray(base64.b64decode(sealed["sealed"]))
    raw[60] ^= 0x01
    tampered = {**sealed, "sealed": base64.b64encode(bytes(raw)).decode()}
    assert send(app, envelope.seal(key, Action.RESULT, tampered)) == "dropped: bad box"
    to_other = sealing.seal_result(sealing.worker_box(key, other), result)
    assert send(app, envelope.seal(key, Action.RESULT, to_other)) == "dropped: bad box"
    # A well-sealed result is opened and goes on to collect (its chunk is unknown here: ignored); so does
    # a refusal, which carries no data (an empty payload and the reason).
    assert send(app, envelope.seal(key, Action.RESULT, sealed)) == "ignored"
    refusal = results.sign(ChunkResult("0" * 16, "c0", "w@h", "eu-west", 1, 0.0, 0.0, {},
                                       payload_digest("0" * 16, "c0", {}), error="SealError: x").to_json(), key)
    assert send(app, envelope.seal(key, Action.RESULT, refusal)) == "ignored"
    assert intake.dropped_counts(app.redis) == {"unsealed": 3, "bad box": 2}


def test_enrolled_volunteers_over_tls_get_the_box_key_in_their_credentials_and_compute_sealed(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    require_redis7()
    with running_stack(tmp_path_factory.mktemp("isolated"), {"eu-west": 1}, isolate=True, tls=True,
                       encryption=True, **STATIC) as isolated:
        app = create_app(isolated.child_settings())
        creds = json.loads((isolated.settings.data_dir / "volunteers" / "eu-west-1" / "volunteer.json").read_text())
        assert creds["box_key"] == sealing.control_public_hex(isolated.settings.data_dir)
        with BrokerTap(isolated.client()) as tap:
            job = wait_for_job(app, submit_job(app, {"kind": "pi", "params": {"samples": 600_000_000,
                                                                              "seed": SEED}}).id, timeout_s=120)
        assert job.state == "done" and job.result["hits"] == compute.pi_hits(SEED, 0, 600_000_000)
        chunks = [m for m in tap.messages() if m[2] == "hydra.compute_chunk"]
        assert any(k == "hydra.unacked.eu-west-1" for k, *_ in chunks), {k for k, *_ in chunks}
        assert not [m[:3] for m in tap.messages() if leaks(m[2], m[3])]
        assert intake.dropped_counts(app.redis) == {}
        denied = [e for e in app.redis.acl_log() if e.get("username") == "eu-west-1"]
        assert denied == []
