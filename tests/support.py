"""Helpers for integration tests: a real local stack (Redis + Celery worker processes) and waiting."""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator


from nacl.signing import SigningKey

from hydra_tasks.celery_app import HydraCelery
from hydra_tasks import keys
from hydra_tasks.jobs import store
from hydra_tasks.jobs.view import JobView
from hydra_tasks.settings import Settings
from hydra_tasks.stack import LocalStack

# Quick timings so that lost work is recovered in seconds (never wait for Celery's 1 h visibility timeout).
FAST = dict(lease_s=4.0, sweep_interval_s=0.5, heartbeat_s=0.5, worker_timeout_s=3.0)


@contextlib.contextmanager
def running_stack(data_dir: Path, workers: dict[str, int], *, cpu_limits: dict[str, float] | None = None,
                  tls: bool = False, **overrides: Any) -> Iterator[LocalStack]:
    """Redis + a control worker with beat + ``workers[region]`` region workers (named region-1, ...),
    all real processes; ``cpu_limits`` caps some of them by name; ``tls``: Redis serves rediss:// only."""
    settings = Settings().with_(data_dir=data_dir, **{**FAST, **overrides})
    stack = LocalStack(settings, log_dir=data_dir / "logs", tls=tls)
    try:
        stack.start_redis()
        stack.start_control(beat=True)
        for region, count in workers.items():
            for i in range(count):
                name = f"{region}-{i + 1}"
                stack.start_region_worker(region, name=name, cpu_limit=(cpu_limits or {}).get(name))
        stack.wait_for_workers(sum(workers.values()), timeout_s=90)
        stack.wait_for_log("control", "ready.", timeout_s=60)
        yield stack
    except BaseException:
        print_logs(stack)
        raise
    finally:
        stack.stop()


def print_logs(stack: LocalStack, lines: int = 60) -> None:
    """The end of every process's log (a failing test's output says what each part did)."""
    for proc in stack.procs.values():
        print(f"----- {proc.name} log -----\n{proc.log_tail(lines)}")


@contextlib.contextmanager
def serving(web: Any) -> Iterator[str]:
    """Serve the Flask app ``web`` on 127.0.0.1 (Werkzeug's threaded server, a free port) while the block
    runs; yields its base URL."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, web, threaded=True)
    threading.Thread(target=server.serve_forever, name="test-webapp", daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def artifacts_dir() -> Path:
    """Where tests keep files for people to look at (browser screenshots): ``HYDRA_TEST_ARTIFACTS`` if
    set, else ``build/screenshots/`` in the repository (gitignored); created if missing."""
    import os

    configured = os.environ.get("HYDRA_TEST_ARTIFACTS", "").strip()
    path = Path(configured).expanduser() if configured else Path(__file__).resolve().parents[1] / "build" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_redis7() -> None:
    """Skip the calling test (or fixture) cleanly where no redis-server >= 7 is installed."""
    import pytest

    from hydra_tasks.embedded import find_redis7_server
    from hydra_tasks.errors import EmbeddedRedisError

    try:
        find_redis7_server()
    except EmbeddedRedisError as exc:
        pytest.skip(f"needs redis-server >= 7 (apt-get install redis-server): {exc}")


def wait_for(predicate: Callable[[], Any], *, timeout_s: float, what: str, poll_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def wait_for_job(app: HydraCelery, job_id: str, *, timeout_s: float = 120.0) -> JobView:
    """Wait until the job is final; then none of its chunks may still hold a lease or a worker's slot."""
    def final() -> JobView | None:
        job = store.get_job(app.redis, job_id)
        return job if job.is_final else None

    job = wait_for(final, timeout_s=timeout_s, what=f"job {job_id} to finish")
    prefix = keys.lease_member(job_id, "")
    held = {w: [m for m in app.redis.smembers(keys.worker_inflight(w)) if m.startswith(prefix)]
            for w in app.redis.smembers(keys.WORKERS)}
    assert not any(held.values()), f"job {job_id} ended but still holds worker slots: {held}"
    assert not [m for m in app.redis.zrange(keys.LEASES, 0, -1) if m.startswith(prefix)], "leases left behind"
    return job


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the moment of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keyed_worker(app: HydraCelery, name: str, *, region: str = "r", clean_audits: int = 0) -> SigningKey:
    """Register an online worker with its own Ed25519 key and token account, as the intake would on
    its signed registration; ``clean_audits``: a veteran's standing (audits passed before the test)."""
    from hydra_tasks.ledger import book
    from hydra_tasks.models import WorkerState
    from hydra_tasks.trust import identity
    from hydra_tasks.worker import registry

    key, now = SigningKey.generate(), time.time()
    registry.register(app.redis, registry.WorkerInfo(
        worker_id=name, region=region, host="test", pid=1, cores=1, concurrency=1, pi_samples_per_s=1e8,
        mandelbrot_iters_per_s=1e8, state=WorkerState.ONLINE, started_at=now, last_seen=now,
        public_key=identity.public_hex(key)))
    book.open_account(app.redis, identity.public_hex(key))
    if clean_audits:
        app.redis.hset(keys.worker(name), "audits_passed", clean_audits)
    return key


def submit_planned(app: HydraCelery, raw: dict[str, Any]) -> str:
    """Store a job straight from its spec (no Celery task), with the chunks planned up front."""
    from hydra_tasks.jobs.spec import parse_job_spec
    from hydra_tasks.scheduling import planner

    spec = parse_job_spec(raw)
    job_id = store.new_job_id()
    store.create_job(app.redis, spec, planner.plan(job_id, spec, app.settings), job_id=job_id)
    return job_id


#: What a dispatch sent: (chunk spec JSON, attempt, worker id) per chunk.
Sent = list[tuple[dict[str, Any], int, str]]


def dispatch_in_process(app: HydraCelery, settings: Settings | None = None) -> Sent:
    """Run one dispatch in this process (capacity routing) and return what it sent, instead of
    publishing it: the test plays the workers."""
    from hydra_tasks.scheduling.dispatcher import dispatch
    from hydra_tasks.scheduling.router import CapacityRouter

    sent: Sent = []
    dispatch(app.redis, settings or app.settings, CapacityRouter(), lambda c, a, w, r: sent.append((c, a, w)))
    return sent


# --- a real Chromium, driven by selenium (the dashboard's browser tests) ---------------------------------
CHROMIUM_PATH = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p),
                     None)
CHROMEDRIVER_PATH = shutil.which("chromedriver")
NO_BROWSER = ("Chromium, chromedriver or selenium is not installed "
              "(apt-get install chromium chromium-driver; pip install -e '.[test]')")


def browser_available() -> bool:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return CHROMIUM_PATH is not None and CHROMEDRIVER_PATH is not None


@contextlib.contextmanager
def chromium(*, width: int = 1280, height: int = 1800) -> Iterator[Any]:
    """A headless Chromium under selenium (Debian's chromium and chromedriver; no download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM_PATH)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER_PATH)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def element_text(browser: Any, element_id: str) -> str | None:
    """The rendered text of the element with this id, read in one script in the page (None when there
    is no such element, or the page is between documents). ``find_element(...).text`` is two steps:
    a page that re-renders or reloads itself in between makes the handle stale."""
    from selenium.common.exceptions import JavascriptException, StaleElementReferenceException

    try:
        text = browser.execute_script(
            "const e = document.getElementById(arguments[0]); return e ? e.innerText : null;", element_id)
    except (JavascriptException, StaleElementReferenceException):
        return None
    return None if text is None else str(text).strip()
