"""Live updates on a real stack: Redis, the control worker with beat, a region worker, and the webapp
under gunicorn as ``hydra up`` runs it (gthread, 16 threads).

* A job page open in Chromium follows the job from queued to done through the stream alone (the
  gunicorn access log shows the stream and no polling of the job), then shows the result.
* Eight open streams take a gunicorn process's stream slots; a ninth is refused with 503, and the
  JSON API still answers at once: streams cannot starve the API.
"""

from __future__ import annotations

import time
from typing import Iterator

import pytest
import requests

from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.jobs.submit import submit_job
from hydra_tasks.stack import LocalStack
from hydra_webapp.events import MAX_STREAMS
from support import (artifacts_dir, browser_available, chromium, element_text, free_port, running_stack, wait_for,
                     wait_for_job)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory.mktemp("live"), {}, target_chunk_s=0.3, min_chunk_s=0.1) as stack:
        stack.start_webapp(port=free_port())
        stack.wait_ready("webapp")
        yield stack


def access_log(stack: LocalStack) -> str:
    return stack.procs["webapp"].log_path.read_text(errors="replace")  # gunicorn's --access-logfile -


def test_streams_beyond_the_bound_get_503_and_the_api_still_answers(stack: LocalStack) -> None:
    """(First in the module: no other stream holds a slot yet.)"""
    url = stack.web_url
    held: list[tuple[requests.Response, Iterator[bytes]]] = []
    sessions: list[requests.Session] = []
    try:
        for _ in range(MAX_STREAMS):
            sessions.append(requests.Session())  # (requests.get would close the stream's connection on return)
            response = sessions[-1].get(f"{url}/api/events", stream=True, timeout=10)
            assert response.status_code == 200, response.text[:300]
            chunks = response.iter_content(chunk_size=None)  # kept: a dropped iterator closes the connection
            assert next(chunks).startswith(b"retry:")  # the stream is open and sending
            held.append((response, chunks))
        refused = requests.get(f"{url}/api/events", timeout=10)
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
        assert "poll the JSON API" in refused.json()["error"]
        started = time.monotonic()
        for path in ("/api/jobs", "/api/workers", "/api/leaderboard", "/"):
            assert requests.get(url + path, timeout=10).status_code == 200
        assert time.monotonic() - started < 15  # (generous: a loaded 2-core CI machine; hung would be 30 s+)
    finally:
        for response, _ in held:
            response.close()
        for session in sessions:
            session.close()
    # The server notices a client has gone when a write to it fails, at the latest at the next heartbeat
    # comment: wait until a slot is free again, so the next test's page gets a stream rather than polling.
    wait_for(lambda: _stream_opens(url), timeout_s=60, what="a free stream slot after the held streams closed",
             poll_s=1.0)


def _stream_opens(url: str) -> bool:
    with requests.get(f"{url}/api/events", stream=True, timeout=10) as response:
        return response.status_code == 200


@pytest.mark.skipif(not browser_available(), reason="Chromium, chromedriver or selenium is not installed")
def test_a_job_page_follows_a_real_job_from_queued_to_done_through_the_stream(app: HydraCelery,
                                                                                stack: LocalStack) -> None:
    from selenium.webdriver.common.by import By

    job = submit_job(app, {"kind": "pi", "params": {"samples": 200_000_000, "seed": 11}})  # no worker yet: queued
    with chromium() as browser:
        browser.get(f"{stack.web_url}/jobs/{job.id}")
        wait_for(lambda: browser.find_element(By.ID, "live").get_attribute("data-mode") == "live", timeout_s=30,
                 what="the live indicator")
        assert browser.find_element(By.ID, "job-state").text == "queued"
        browser.save_screenshot(str(artifacts_dir() / "stack-job-page-queued-live.png"))
        stack.start_region_worker("r", name="r-1")
        stack.wait_for_workers(1, timeout_s=90)
        # (the page reloads itself when the job ends: read the state in one script, not through an
        # element handle that the reload may have made stale between finding it and reading it)
        wait_for(lambda: element_text(browser, "job-state") in ("running", "done"), timeout_s=60,
                 what="the job running on the page")
        assert wait_for_job(app, job.id, timeout_s=120).state == "done"
        wait_for(lambda: "π ≈" in browser.page_source, timeout_s=15, what="the result, after the page reloaded")
        browser.save_screenshot(str(artifacts_dir() / "stack-job-page-done.png"))
    # (gunicorn logs a request when it ends: a poll would be in the log at once; the stream only once the
    # server noticed the browser left, at a heartbeat.)
    log = access_log(stack)
    assert f"GET /api/jobs/{job.id} " not in log, "the page polled instead of listening to the stream"


def test_stopping_the_webapp_ends_open_streams_at_once(stack: LocalStack) -> None:
    """(Last in the module: it stops the webapp.) gunicorn's graceful shutdown would wait 10 s for
    each open stream; the streams notice the worker stopping and end with ``bye`` within a tick."""
    import os
    import signal

    session = requests.Session()
    try:
        response = session.get(f"{stack.web_url}/api/events", stream=True, timeout=10)
        chunks = response.iter_content(chunk_size=None)
        assert next(chunks).startswith(b"retry:")
        started = time.monotonic()
        os.killpg(stack.procs["webapp"].popen.pid, signal.SIGTERM)
        rest = b"".join(chunks)
        assert b"event: bye" in rest
        stack.procs["webapp"].popen.wait(timeout=15)
        assert time.monotonic() - started < 8  # gunicorn's graceful timeout is 10 s: the stream did not hold it up
    finally:
        session.close()
