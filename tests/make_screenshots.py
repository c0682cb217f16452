"""Take the README's screenshots from a real stack: ``.venv/bin/python tests/make_screenshots.py``.

Starts Redis, the control plane and three region workers (tests/support.running_stack), serves the
dashboard with gunicorn as ``hydra up`` does, submits a few jobs (π, a Mandelbrot zoom, one with a
deadline that waits for clean power, one cancelled), waits until the Mandelbrot image is part-way
filled in, and saves a PNG of the dashboard in headless Chromium as
``webapp/static/docs/dashboard.png``. Not a test (pytest does not collect it); run it by hand when the dashboard
changes, and look at the pictures before committing them.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import requests

from hydra_tasks.celery_app import create_app as create_celery_app

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import chromium, free_port, running_stack, wait_for, wait_for_job  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "webapp" / "static" / "docs"
TOKEN = "screenshot-token"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hydra-shots-") as tmp, \
            running_stack(Path(tmp), {"eu-north": 1, "eu-west": 1, "ap-south": 1}, api_token=TOKEN,
                          target_chunk_s=0.5, min_chunk_s=0.1) as stack:
        port = free_port()
        stack.start_webapp(port=port)
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                return requests.get(f"{url}/healthz", timeout=5).ok
            except requests.ConnectionError:
                return False

        wait_for(answers, timeout_s=60, what="the webapp")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        app = create_celery_app(stack.child_settings())

        def submit(spec: dict) -> str:
            answer = requests.post(f"{url}/api/jobs", json=spec, headers=auth, timeout=30)
            answer.raise_for_status()
            return str(answer.json()["id"])

        for samples in (4e9, 8e9):
            wait_for_job(app, submit({"kind": "pi", "params": {"samples": samples}}), timeout_s=300)
        cancelled = submit({"kind": "pi", "params": {"samples": 1e12}, "priority": 1})
        time.sleep(2)
        requests.post(f"{url}/api/jobs/{cancelled}/cancel", headers=auth, timeout=30).raise_for_status()
        submit({"kind": "pi", "params": {"samples": 2e10}, "deadline": "+20h"})
        zoom = submit({"kind": "mandelbrot", "params": {"width": 1600, "height": 1200, "max_iter": 20000,
                                                        "center_x": -0.743643887, "center_y": 0.131825904,
                                                        "span": 0.0006}})
        submit({"kind": "pi", "params": {"samples": 3e10}})
        wait_for(lambda: 0.35 < requests.get(f"{url}/api/jobs/{zoom}", timeout=5).json()["progress"] < 0.8,
                 timeout_s=300, what="the zoom part-way done", poll_s=0.2)
        with chromium(width=1280, height=1500) as browser:
            browser.get(url)
            time.sleep(4)
            browser.save_screenshot(str(OUT / "dashboard.png"))
        print(f"saved {OUT / 'dashboard.png'}")


if __name__ == "__main__":
    main()
