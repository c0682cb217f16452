"""The dashboard in a real headless Chromium: its script keeps the page live from the JSON API.

Skipped where no Chromium is installed (`.ci/run` installs the Debian package when it can)."""

from __future__ import annotations

import shutil
import subprocess
import threading
from typing import Iterator

import pytest
from flask import Flask, Response, request
from nacl.signing import SigningKey
from werkzeug.serving import make_server

from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.ledger import book as ledger
from hydra_tasks.ledger.rewards import Reward
from hydra_tasks.trust import identity
from hydra_webapp import create_app

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def mint(app: HydraCelery, account: str, micro: int, key: str) -> None:
    ledger.mint(app.redis, account, Reward(micro, micro, 0, 0, 0, micro, False), job_id="browser", chunk_id=key,
                reason="test grant")


@pytest.fixture(scope="module")
def served(redis_only: HydraCelery) -> Iterator[tuple[str, Flask]]:
    web = create_app(celery_app=redis_only)
    server = make_server("127.0.0.1", 0, web, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", web
    finally:
        server.shutdown()


def dump_dom(url: str) -> str:
    assert CHROMIUM is not None
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=4000",
                           "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
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

    dom = dump_dom(url + "/")
    supply = ledger.token_metrics(redis_only.redis)["supply"]
    assert f'<span id="token-supply">{supply}</span>' in dom, dom[:3000]
    assert account[:16] in dom and "42.000000" in dom  # the leaderboard row, refreshed by the script
    assert 'data-page="index"' in dom
