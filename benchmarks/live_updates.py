"""What live dashboards cost the control plane: Redis commands per second with Server-Sent Events
streams open, against dashboards that poll, in the same run.

    .venv/bin/python benchmarks/live_updates.py [--windows 5]

Starts an embedded Redis and the webapp under gunicorn exactly as ``hydra up`` does (gthread), then
measures Redis's ``total_commands_processed`` over 5 s windows (median of ``--windows``):
nothing open; 1 stream; 8 streams (the per-process cap, all sharing each second's reads);
one dashboard polling as app.js does when streams are refused (``/api/jobs`` every second, the
workers, leaderboard and token metrics every 5 s). Also: ``GET /api/jobs`` latency with 8 streams
open (median of 20), what a 9th stream gets, and how long gunicorn takes to stop with 8 open.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hydra_tasks.embedded import EmbeddedRedis  # noqa: E402
from hydra_tasks.settings import Settings  # noqa: E402
from hydra_tasks.stack import webapp_argv  # noqa: E402
from support import free_port  # noqa: E402

WINDOW_S = 5.0


def commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def rate(client: redis.Redis, windows: int, during: Any = None) -> float:
    """Median Redis commands/s over ``windows`` windows (less the INFO calls themselves)."""
    rates = []
    for _ in range(windows):
        before, t0 = commands(client), time.monotonic()
        if during is None:
            time.sleep(WINDOW_S)
        else:
            during(WINDOW_S)
        rates.append((commands(client) - before - 1) / (time.monotonic() - t0))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hydra-live-"))
    server = EmbeddedRedis(tmp / "redis")
    url = server.start()
    env = {**os.environ, **Settings().with_(redis_url=url, data_dir=tmp).to_env()}
    port = free_port()
    web = subprocess.Popen(webapp_argv("127.0.0.1", port, tls=None), env=env, stdout=open(tmp / "web.log", "wb"),
                           stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        client = redis.Redis.from_url(url)
        idle = rate(client, args.windows)
        print(f"nothing open:            {idle:6.1f} Redis commands/s")

        def poll(seconds: float) -> None:
            end, tick = time.monotonic() + seconds, 0
            while time.monotonic() < end:
                requests.get(f"{base}/api/jobs?limit=50", timeout=10)
                if tick % 5 == 0:
                    for path in ("/api/workers", "/api/leaderboard?limit=10", "/api/token_metrics"):
                        requests.get(f"{base}{path}", timeout=10)
                tick += 1
                time.sleep(1.0)

        polling = rate(client, args.windows, poll)
        print(f"1 polling dashboard:     {polling:6.1f} Redis commands/s")
        held: list[Any] = []
        results = {}
        for n in (1, 8):
            while len(held) < n:
                session = requests.Session()
                response = session.get(f"{base}/api/events", stream=True, timeout=10)
                stream = response.iter_content(None)
                next(stream)
                held.append((session, response, stream))
            time.sleep(1.5)
            results[n] = rate(client, args.windows)
            print(f"{n} stream(s) open:       {results[n]:6.1f} Redis commands/s "
                  f"({results[n] / polling:.2f}x one polling dashboard)")
        latencies = []
        for _ in range(20):
            t0 = time.perf_counter()
            requests.get(f"{base}/api/jobs", timeout=10)
            latencies.append(time.perf_counter() - t0)
        print(f"GET /api/jobs with 8 streams open: {statistics.median(latencies) * 1000:.1f} ms (median of 20)")
        ninth = requests.get(f"{base}/api/events", stream=True, timeout=10)
        print(f"a 9th stream: {ninth.status_code}, Retry-After {ninth.headers.get('Retry-After')}")
        ninth.close()
        t0 = time.monotonic()
        os.killpg(web.pid, 15)
        web.wait(timeout=60)
        print(f"gunicorn stopped in {time.monotonic() - t0:.1f} s with 8 streams open")
    finally:
        if web.poll() is None:
            os.killpg(web.pid, 9)
        server.stop()


if __name__ == "__main__":
    main()
