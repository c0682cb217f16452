"""The dashboard in a real headless Chromium (selenium): its script keeps the page live.

(``chromium --dump-dom`` cannot be used any more: with a live-update stream open the page never
goes idle.) Skipped where no Chromium is installed (`.ci/run` installs the Debian package when it can)."""

from __future__ import annotations

from typing import Iterator

import pytest
from flask import Flask, Response, request
from nacl.signing import SigningKey

from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.ledger import book as ledger
from hydra_tasks.ledger.rewards import Reward
from hydra_tasks.trust import identity
from hydra_webapp import create_app
from support import NO_BROWSER, artifacts_dir, browser_available, chromium, serving

pytestmark = pytest.mark.integration

CHROMIUM = "chromium" if browser_available() else None


def mint(app: HydraCelery, account: str, micro: int, key: str) -> None:
    ledger.mint(app.redis, account, Reward(micro, micro, 0, 0, 0, micro, False), job_id="browser", chunk_id=key,
                reason="test grant")


@pytest.fixture(scope="module")
def served(redis_only: HydraCelery) -> Iterator[tuple[str, Flask]]:
    web = create_app(celery_app=redis_only)
    with serving(web) as url:
        yield url, web


def dump_dom(url: str, *, wait_for: str | None = None, width: int = 1280, height: int = 1800,
             screenshot: str | None = None) -> str:
    """The page's DOM once ``wait_for`` (a text) appears in it, or after its scripts ran for a moment."""
    import time

    with chromium(width=width, height=height) as driver:
        driver.get(url)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(0.3)
            if wait_for is None or wait_for in driver.page_source:
                break
        if screenshot:
            driver.save_screenshot(str(artifacts_dir() / screenshot))
        return str(driver.execute_script("return document.documentElement.outerHTML"))


@pytest.mark.skipif(CHROMIUM is None, reason=NO_BROWSER)
def test_the_token_leaderboard_updates_live_in_a_real_browser(
        redis_only: HydraCelery, served: tuple[str, Flask]) -> None:
    url, web = served
    account = identity.public_hex(SigningKey.generate())
    ledger.open_account(redis_only.redis, account)
    mint(redis_only, account, 1_000_000, key="first")

    @web.after_request
    def tokens_arrive_after_the_page_is_served(response: Response) -> Response:
        if request.path == "/":  # the page shows 1 token; only the script can show what comes next
            mint(redis_only, account, 41_000_000, key="second")
        return response

    dom = dump_dom(url + "/", wait_for="42.000000")
    supply = ledger.token_metrics(redis_only.redis)["supply"]
    assert f'<span id="token-supply">{supply}</span>' in dom, dom[:3000]
    assert account[:16] in dom and "42.000000" in dom  # the leaderboard row, refreshed by the script
    assert 'data-page="index"' in dom


@pytest.mark.skipif(CHROMIUM is None, reason=NO_BROWSER)
def test_workers_show_measured_speed_and_isa_offline_ones_greyed_and_the_page_has_a_favicon(
        redis_only: HydraCelery, served: tuple[str, Flask]) -> None:
    """Issue 13: the table shows the speed scheduling uses (measured), not the start-up calibration;
    the instruction set; an offline worker stays listed, greyed; a favicon; and a screenshot at phone
    width is kept with the test run's files."""
    import time

    from hydra_tasks.models import WorkerState
    from hydra_tasks.worker import performance, registry

    url, _ = served
    now = time.time()
    for name, state in (("fast@browser", WorkerState.ONLINE), ("gone@browser", WorkerState.OFFLINE)):
        registry.register(redis_only.redis, registry.WorkerInfo(
            worker_id=name, region="eu-west", host="h", pid=1, cores=2, concurrency=1, pi_samples_per_s=55e6,
            mandelbrot_iters_per_s=1e8, state=state, started_at=now, last_seen=now, isa="avx2"))
    with redis_only.redis.pipeline(transaction=False) as pipe:  # one accepted chunk measured it at 101 M/s
        performance.record_observation(pipe, "fast@browser", "pi", performance.Performance(101e6, 0.0, 1))
        pipe.execute()
    dom = dump_dom(url + "/", screenshot="dashboard-phone.png", width=390, height=844)
    assert 'rel="icon"' in dom and "favicon.svg" in dom
    row = dom[dom.index("fast@browser"):]
    row = row[:row.index("</tr>")]
    assert "101,000,000" in row and "avx2" in row and "55,000,000" in row  # measured shown; calibration in title
    gone = dom[:dom.index("gone@browser")]
    assert gone.rindex("<tr") == gone.rindex('<tr class="worker-offline"')
    shot = artifacts_dir() / "dashboard-phone.png"
    assert shot.exists() and shot.stat().st_size > 1000
