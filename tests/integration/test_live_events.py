"""GET /api/events (Server-Sent Events) and GET /api/history, over a real HTTP server on a real Redis.

A client reads the stream with requests (stream=True): the state arrives when the stream opens, a
job's progress arrives when a real merge changes it, the stream ends after its lifetime with a
``bye``, streams beyond the bound are refused with 503 (the dashboard then polls), and the read rate
limit counts a stream once without cutting it. The history endpoint serves what merges and the
carbon sampler recorded.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Iterator

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from hydra_tasks import history, keys
from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.celery_app import create_app as create_celery_app
from hydra_tasks.grid.configure import build_chain
from hydra_tasks.jobs import collect
from hydra_tasks.worker.compute import run_chunk
from hydra_webapp import create_app
from hydra_webapp.events import streams_of
from support import dispatch_in_process, keyed_worker, serving, submit_planned

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(redis_only: HydraCelery) -> Iterator[tuple[str, Flask]]:
    web = create_app(celery_app=redis_only)
    streams = streams_of(web)
    streams.tick_s, streams.heartbeat_s = 0.2, 0.5
    with serving(web) as url:
        yield url, web


class EventReader:
    """Parses a text/event-stream response into (event, id, data) tuples."""

    def __init__(self, response: requests.Response) -> None:
        self.lines = self._lines(response)
        self.comments = 0
        self.retry: int | None = None

    @staticmethod
    def _lines(response: requests.Response) -> Iterator[str]:
        buffer = ""
        for piece in response.iter_content(chunk_size=None):  # as it arrives (iter_lines waits for 512 bytes)
            buffer += piece.decode()
            *lines, buffer = buffer.split("\n")
            yield from lines

    def next(self) -> tuple[str, str | None, Any]:
        name, event_id, data = "message", None, []
        for line in self.lines:
            if line == "":
                if data:
                    return name, event_id, json.loads("\n".join(data))
                continue
            if line.startswith(":"):
                self.comments += 1
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "id":
                event_id = value
            elif field == "data":
                data.append(value)
            elif field == "retry":
                self.retry = int(value)
        raise EOFError("the stream ended")

    def until(self, predicate: Any, *, limit: int = 200) -> tuple[str, str | None, Any]:
        for _ in range(limit):
            event = self.next()
            if predicate(event):
                return event
        raise AssertionError("no matching event")


def wait_until_closed(streams: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while streams.open and time.monotonic() < deadline:
        time.sleep(0.05)
    assert streams.open == 0, f"{streams.open} stream(s) still open"


def merge_all(app: HydraCelery, key: Any) -> int:
    """Dispatch once in this process and merge every chunk sent, computed for real. Returns how many."""
    sent = dispatch_in_process(app)
    assert sent, "nothing dispatched"
    for chunk, attempt, wid in sent:
        assert collect.collect(app.redis, app.settings, run_chunk(chunk, attempt=attempt, worker_id=wid, region="r",
                                                                  key=key)) == "merged"
    return len(sent)


def test_the_stream_sends_the_state_then_a_jobs_progress_when_a_real_merge_changes_it(
        redis_only: HydraCelery, served: tuple[str, Flask]) -> None:
    url, web = served
    key = keyed_worker(redis_only, "sse@test")
    job_id = submit_planned(redis_only, {"kind": "pi", "params": {"samples": 4_000_000, "seed": 5}})
    opened = streams_of(web).opened
    with requests.get(f"{url}/api/events?job={job_id}&topics=job,jobs", stream=True, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")  # after_request applies
        assert "no-cache" in response.headers["Cache-Control"]
        reader = EventReader(response)
        first = {reader.next()[0], reader.next()[0]}
        assert first == {"job", "jobs"} and reader.retry == 2000
        assert streams_of(web).opened == opened + 1 and streams_of(web).open >= 1

        merge_all(redis_only, key)
        seen: dict[str, Any] = {}
        while len(seen) < 2:  # both topics changed: each arrives once, in the same tick
            name, event_id, data = reader.next()
            if name == "job" and data["chunks_done"] >= 1:
                seen[name], job_event_id = data, event_id
            if name == "jobs" and any(j["id"] == job_id and j["chunks_done"] >= 1 for j in data["jobs"]):
                seen[name] = data
        job = seen["job"]
        assert job["id"] == job_id and job["progress"] > 0 and "sse@test" in job["workers"]
        assert job_event_id and len(job_event_id) == 20
        event_id = job_event_id
        last_id = event_id

    # Reconnecting with Last-Event-ID when nothing changed: no state is sent again, only heartbeats.
    with requests.get(f"{url}/api/events?job={job_id}&topics=job,jobs", stream=True, timeout=10,
                      headers={"Last-Event-ID": last_id}) as response:
        raw = b""
        deadline = time.monotonic() + 1.5
        for piece in response.iter_content(chunk_size=None):
            raw += piece
            if time.monotonic() > deadline:
                break
        text = raw.decode()
        assert "retry: 2000" in text and ": hb" in text and "event: " not in text, text[:500]


def test_a_stream_ends_after_its_lifetime_and_streams_beyond_the_bound_are_refused(
        redis_only: HydraCelery, served: tuple[str, Flask]) -> None:
    url, web = served
    streams = streams_of(web)
    streams.lifetime_s = 1.0
    try:
        started = time.monotonic()
        with requests.get(f"{url}/api/events", stream=True, timeout=10) as response:
            reader = EventReader(response)
            name, _, data = reader.until(lambda e: e[0] == "bye")
            assert data == {"reconnect_ms": 2000}
            with pytest.raises(EOFError):
                reader.next()
        assert time.monotonic() - started < 5
    finally:
        streams.lifetime_s = 300.0

    wait_until_closed(streams)  # the earlier tests' streams are gone (noticed at their next heartbeat)
    streams.max_streams = 1
    try:
        with requests.get(f"{url}/api/events", stream=True, timeout=10) as held:
            assert held.status_code == 200
            reader = EventReader(held)  # kept: a dropped reader's generator would close the connection
            reader.next()
            refused = requests.get(f"{url}/api/events", stream=True, timeout=10)  # (a stream would never end)
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "30"
            assert "poll the JSON API" in refused.json()["error"]
            assert requests.get(f"{url}/api/jobs", timeout=10).status_code == 200  # the API still answers
        wait_until_closed(streams)  # the closed stream frees its slot (noticed at its next write)
        with requests.get(f"{url}/api/events", stream=True, timeout=10) as again:
            assert again.status_code == 200
    finally:
        streams.max_streams = 8


def test_bad_stream_parameters_get_a_400_saying_what_to_send(served: tuple[str, Flask]) -> None:
    url, web = served
    opened = streams_of(web).opened
    for query, expected in (("topics=jobs,nonsense", "comma-separated list"), ("topics=job", "needs the job"),
                            ("job=XYZ", "lowercase hex")):
        answer = requests.get(f"{url}/api/events?{query}", timeout=10)
        assert answer.status_code in (400, 404), (query, answer.status_code)
        assert expected in answer.json()["error"], answer.json()
    assert streams_of(web).opened == opened  # refused before a stream slot was taken


def test_the_read_limit_counts_a_stream_once_and_never_cuts_it(redis_only: HydraCelery) -> None:
    settings = redis_only.settings.with_(rate_limit_reads="3 per minute")
    web = create_app(celery_app=create_celery_app(settings))
    streams_of(web).tick_s = 0.1
    server = make_server("127.0.0.1", 0, web, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        redis_only.redis.delete(*redis_only.redis.keys(keys.RATE_LIMIT_PREFIX + "*") or ["-"])
        with requests.get(f"{url}/api/events?topics=jobs", stream=True, timeout=10) as response:
            assert response.status_code == 200
            reader = EventReader(response)
            reader.next()
            job_id = submit_planned(redis_only, {"kind": "pi", "params": {"samples": 1_000_000}})
            # 3 reads a minute: the stream was one; two more pass, the third is refused ...
            assert [requests.get(f"{url}/api/jobs", timeout=10).status_code for _ in range(3)] == [200, 200, 429]
            # ... and the open stream still delivers.
            reader.until(lambda e: e[0] == "jobs" and any(j["id"] == job_id for j in e[2]["jobs"]))
    finally:
        server.shutdown()


def test_history_serves_the_chunk_rate_speeds_carbon_deferred_jobs_and_tokens_per_day(
        redis_only: HydraCelery, served: tuple[str, Flask]) -> None:
    url, _ = served
    r = redis_only.redis
    r.flushdb()  # only this test's worker and jobs
    key = keyed_worker(redis_only, "hist@test", region="eu-north")
    for seed in (9, 10):
        submit_planned(redis_only, {"kind": "pi", "params": {"samples": 4_000_000, "seed": seed}})
    before = requests.get(f"{url}/api/history?minutes=5", timeout=10).json()
    merged_before = sum(v for _, v in before["chunks_per_s"]) * before["step_s"]
    merged = merge_all(redis_only, key)
    assert merged == 2  # one chunk of each job
    provider = build_chain(redis_only.settings)
    sampled = history.sample_carbon(r, redis_only.settings, provider)
    assert "eu-north" in sampled or r.hexists(keys.history(int(time.time() // 3600)),
                                              f"sampled:{int(time.time() // 60) * 60}")
    # A deferred job: a deadline, and a threshold below every region's power now.
    deferred = submit_planned(redis_only, {"kind": "pi", "params": {"samples": 1_000_000},
                                           "deadline": time.time() + 4 * 3600})
    r.hset(keys.job(deferred), "carbon_threshold", "1.0")

    h = requests.get(f"{url}/api/history?minutes=5&days=3", timeout=10).json()
    assert h["window_s"] == 300 and h["step_s"] == 10
    assert sum(v for _, v in h["chunks_per_s"]) * h["step_s"] == merged_before + 2
    assert len(h["chunks_per_s"]) in (30, 31, 32)
    assert h["worker_speed"]["hist@test"]["pi"][-1][1] > 0
    assert h["carbon"]["eu-north"][-1][1] > 1.0
    entry = next(j for j in h["deferred"] if j["id"] == deferred)
    assert entry["waiting"] is True and entry["carbon_threshold"] == 1.0
    assert entry["why"].startswith("waits for power below 1 g/kWh") and "deadline" in entry["why"]
    assert [d for d, _ in h["minted_per_day_micro"]][-1] == time.strftime("%Y-%m-%d", time.gmtime())
    assert h["minted_per_day_micro"][-1][1] > 0 and len(h["minted_per_day_micro"]) == 3

    for bad in ("minutes=0", "minutes=361", "days=abc", "minutes=5&minutes=6"):
        answer = requests.get(f"{url}/api/history?{bad}", timeout=10)
        assert answer.status_code == 400 and "'" in answer.json()["error"], bad


def test_when_redis_goes_away_the_stream_says_so_and_ends(tmp_path: Any) -> None:
    from hydra_tasks.embedded import EmbeddedRedis
    from hydra_tasks.settings import Settings

    server = EmbeddedRedis(tmp_path / "redis")
    redis_url = server.start()
    try:
        web = create_app(celery_app=create_celery_app(Settings().with_(redis_url=redis_url, data_dir=tmp_path)))
        streams_of(web).tick_s = 0.1
        http = make_server("127.0.0.1", 0, web, threaded=True)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        try:
            with requests.get(f"http://127.0.0.1:{http.server_port}/api/events?topics=jobs", stream=True,
                              timeout=30) as response:
                reader = EventReader(response)
                assert reader.next()[0] == "jobs"
                server.stop()
                name, _, data = reader.until(lambda e: e[0] == "problem")
                assert data == {"error": "Redis is unavailable; the dashboard will retry."}  # no address, no detail
                with pytest.raises(EOFError):
                    reader.next()
            assert streams_of(web).open == 0
        finally:
            http.shutdown()
    finally:
        server.stop()
