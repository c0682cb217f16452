"""The live dashboard in a real Chromium (selenium + Debian's chromedriver), against a real webapp on a
real Redis, with chunks computed and merged by the real modules.

* Updates arrive pushed over Server-Sent Events: the indicator says "live", the server counted the
  stream, and the page made no polling request, yet the job list and the job page follow a merge.
* When the server refuses streams (503), the page falls back to polling by itself and says so.
* The charts draw the points the history holds: chunks/s, worker speed, carbon per region with a
  deferred job's threshold and why it waits, tokens minted per day.

Screenshots go to ``$HYDRA_TEST_ARTIFACTS`` (default ``build/screenshots/`` in the repository), which
the test run keeps. Skipped where Chromium or chromedriver is not installed.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from flask import Flask, Response, request

from hydra_tasks import history, keys
from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.jobs import collect
from hydra_tasks.scheduling.router import carbon_provider
from hydra_tasks.worker.compute import run_chunk
from hydra_webapp import create_app
from hydra_webapp.events import streams_of
from support import (NO_BROWSER, artifacts_dir, browser_available, chromium, dispatch_in_process, keyed_worker,
                     submit_planned, serving)

pytestmark = pytest.mark.integration

if not browser_available():
    pytest.skip(NO_BROWSER, allow_module_level=True)

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def served(redis_only: HydraCelery) -> Iterator[tuple[str, Flask, Counter[str]]]:
    web = create_app(celery_app=redis_only)
    streams_of(web).tick_s, streams_of(web).heartbeat_s = 0.25, 0.5  # a closed page is noticed within a second
    hits: Counter[str] = Counter()

    @web.after_request
    def count(response: Response) -> Response:
        hits[request.path] += 1
        return response

    with serving(web) as url:
        yield url, web, hits


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def wait_until(driver: Any, predicate: Callable[[Any], Any], what: str, timeout_s: float = 15) -> Any:
    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(predicate)  # rows re-rendered
    except Exception:
        screenshot(driver, "failed-" + what.replace(" ", "-")[:40])
        raise AssertionError(f"timed out waiting for {what}") from None


def screenshot(driver: Any, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def indicator(driver: Any) -> tuple[str, str]:
    node = driver.find_element(By.ID, "live")
    return node.get_attribute("data-mode") or "", node.text


def merge_all(app: HydraCelery, key: Any) -> int:
    sent = dispatch_in_process(app)
    for chunk, attempt, wid in sent:
        assert collect.collect(app.redis, app.settings, run_chunk(chunk, attempt=attempt, worker_id=wid, region="r",
                                                                  key=key)) == "merged"
    return len(sent)


def test_the_job_list_and_a_job_page_follow_merges_pushed_over_sse_without_polling(
        redis_only: HydraCelery, served: tuple[str, Flask, Counter[str]], browser: Any) -> None:
    url, web, hits = served
    redis_only.redis.flushdb()
    key = keyed_worker(redis_only, "push@test")
    hits.clear()
    opened = streams_of(web).opened
    browser.get(url + "/")
    wait_until(browser, lambda d: indicator(d) == ("live", "live"), "the indicator to say live")
    job_id = submit_planned(redis_only, {"kind": "pi", "params": {"samples": 2_000_000, "seed": 1}})
    wait_until(browser, lambda d: job_id in d.find_element(By.ID, "jobs-body").text, "the new job in the list")
    assert merge_all(redis_only, key) == 1
    row = wait_until(browser, lambda d: next((r for r in d.find_elements(By.CSS_SELECTOR, "#jobs-body tr")
                                              if job_id in r.text and "100.0%" in r.text), None),
                     "the job at 100% in the list")
    assert "done" in row.text
    workers = browser.find_element(By.ID, "workers-body").text
    assert "push@test" in workers
    assert hits["/api/events"] >= 1 and streams_of(web).opened > opened
    assert hits["/api/jobs"] == 0 and hits["/api/workers"] == 0 and hits["/api/leaderboard"] == 0, hits
    screenshot(browser, "dashboard-live-sse")

    # A running job's page: its counters follow each merge, pushed.
    redis_only.redis.flushdb()
    key = keyed_worker(redis_only, "slow@test")
    redis_only.redis.hset(keys.worker("slow@test"), "pi_samples_per_s", 1e6)  # small chunks: several per job
    big = submit_planned(redis_only, {"kind": "pi", "params": {"samples": 40_000_000, "seed": 2}})
    browser.get(f"{url}/jobs/{big}")
    wait_until(browser, lambda d: indicator(d)[0] == "live", "the job page's indicator to say live")
    done_before = int(browser.find_element(By.CSS_SELECTOR, '[data-field="chunks_done"]').text.replace(",", ""))
    merged = merge_all(redis_only, key)
    assert merged >= 1
    wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, '[data-field="chunks_done"]').text
               == str(done_before + merged), "the merged chunks on the job page")
    assert browser.find_element(By.ID, "job-state").text == "running"
    assert hits[f"/api/jobs/{big}"] == 0, hits
    screenshot(browser, "job-page-live-sse")


def test_a_hidden_tab_gives_its_stream_back_and_opens_a_new_one_when_shown(
        redis_only: HydraCelery, served: tuple[str, Flask, Counter[str]], browser: Any) -> None:
    url, web, _ = served
    streams = streams_of(web)
    browser.get(url + "/")
    wait_until(browser, lambda d: indicator(d) == ("live", "live"), "the indicator to say live")
    browser.execute_script("document.body.dataset.hiddenCloseMs = '300'")  # (a minute outside tests)
    page, opened = browser.current_window_handle, streams.opened
    try:
        wait_until(browser, lambda d: streams.open == 1, "only this page's stream open")
    except AssertionError:
        raise AssertionError(f"open: {streams.open}") from None
    browser.switch_to.new_window("tab")  # the dashboard's tab is hidden now
    wait_until(browser, lambda d: streams.open == 0, "the hidden tab to give its stream back")
    browser.close()
    browser.switch_to.window(page)
    wait_until(browser, lambda d: streams.open == 1 and streams.opened == opened + 1, "a new stream when shown")
    assert indicator(browser) == ("live", "live")


def test_when_streams_are_refused_the_page_falls_back_to_polling(
        redis_only: HydraCelery, served: tuple[str, Flask, Counter[str]], browser: Any) -> None:
    url, web, hits = served
    streams = streams_of(web)
    streams.max_streams = 0  # every stream is refused with 503, as when a process serves too many
    refused = streams.refused
    try:
        hits.clear()
        browser.get(url + "/")
        wait_until(browser, lambda d: indicator(d) == ("polling", "polling"), "the indicator to say polling")
        job_id = submit_planned(redis_only, {"kind": "pi", "params": {"samples": 1_000_000, "seed": 3}})
        wait_until(browser, lambda d: job_id in d.find_element(By.ID, "jobs-body").text, "the job, by polling")
        assert streams.refused > refused and hits["/api/jobs"] >= 1, hits
        screenshot(browser, "dashboard-polling-fallback")
    finally:
        streams.max_streams = 8


def test_the_charts_draw_the_history(redis_only: HydraCelery, served: tuple[str, Flask, Counter[str]],
                                     browser: Any) -> None:
    url, _, _ = served
    r = redis_only.redis
    r.flushdb()
    key = keyed_worker(redis_only, "chart@test", region="eu-north")
    for seed in (4, 5):
        submit_planned(redis_only, {"kind": "pi", "params": {"samples": 2_000_000, "seed": seed}})
    assert merge_all(redis_only, key) == 2  # chunks, a measured speed, and tokens minted today
    assert history.sample_carbon(r, redis_only.settings, carbon_provider(redis_only.settings))["eu-north"] > 0
    deferred = submit_planned(redis_only, {"kind": "pi", "params": {"samples": 1_000_000},
                                           "deadline": time.time() + 5 * 3600})
    r.hset(keys.job(deferred), "carbon_threshold", "2.0")  # as the dispatcher's plan writes it: cleaner than any grid now

    browser.get(url + "/")
    wait_until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-chunks polyline"), "the chunks/s chart")
    chunks = browser.find_element(By.CSS_SELECTOR, "#chart-chunks polyline").get_attribute("points").split()
    heights = [float(p.split(",")[1]) for p in chunks]
    assert len(chunks) >= 360 and min(heights) < max(heights)  # an hour at 10 s, and a peak where 2 merged
    speed = browser.find_elements(By.CSS_SELECTOR, '#chart-speed-pi g[data-series="chart@test"] circle.pt')
    assert len(speed) >= 1
    assert browser.find_elements(By.CSS_SELECTOR, '#chart-carbon g[data-series="eu-north"] circle.pt')
    threshold = browser.find_element(By.CSS_SELECTOR, f'#chart-carbon line.threshold[data-job="{deferred}"]')
    carbon_y = float(browser.find_element(By.CSS_SELECTOR, '#chart-carbon g[data-series="eu-north"] circle.pt')
                     .get_attribute("cy"))
    assert 0 < carbon_y < float(threshold.get_attribute("y1")) <= 180  # drawn below the region's (dirtier) power
    why = browser.find_element(By.ID, "deferred-jobs").text
    assert deferred in why and "waits for power below 2 g/kWh" in why and "eu-north" in why and "deadline" in why
    today = time.strftime("%Y-%m-%d", time.gmtime())
    bar = browser.find_element(By.CSS_SELECTOR, f'#chart-minted rect.bar[data-day="{today}"]')
    assert float(bar.get_attribute("height")) > 0
    charts = browser.find_element(By.ID, "charts")
    browser.execute_script("arguments[0].scrollIntoView()", charts)
    screenshot(browser, "dashboard-charts")
    browser.set_window_size(390, 2400)
    time.sleep(0.3)
    screenshot(browser, "dashboard-charts-phone")
    browser.set_window_size(1280, 1800)

    # The deferred job's own page: the same chart with only its threshold, and why it waits.
    browser.get(f"{url}/jobs/{deferred}")
    wait_until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'#chart-carbon line.threshold[data-job="{deferred}"]'),
               "the job page's carbon chart")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-carbon line.threshold")) == 1
    assert "waits for power below 2 g/kWh" in browser.find_element(By.ID, "deferred-jobs").text
    screenshot(browser, "deferred-job-page")
