"""What the CLI shows on a terminal: `hydra demo`, `hydra up` and `hydra status`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import keys
from .celery_app import HydraCelery, create_app
from .discovery import write_web_info
from .errors import StackError
from .jobs import store
from .jobs.submit import job_png, submit_job
from .jobs.view import JobView
from .settings import Settings
from .stack import LocalStack, is_loopback, port_is_free
from .supervise import Supervisor
from .worker.registry import list_workers

console = Console()


def _own_flower_link(web_host: str, flower_port: int) -> str:
    """The dashboard's link to the Flower `hydra up` runs (on 127.0.0.1): only while the dashboard is on
    loopback too (a remote visitor cannot reach it) and the operator has not set HYDRA_FLOWER_URL
    (a URL, or ``off`` for no link)."""
    if "HYDRA_FLOWER_URL" in os.environ or not is_loopback(web_host):
        return ""
    return f"http://127.0.0.1:{flower_port}"


def _sigterm_as_interrupt() -> None:
    """Ctrl-C and SIGTERM both raise KeyboardInterrupt, so `finally` cleanup runs. SIGINT is set
    explicitly because a shell starting us in the background leaves it ignored."""

    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def stop_uninterruptibly(stack: LocalStack) -> None:
    """Stop the stack; a second Ctrl-C (or SIGTERM) must not abort the cleanup half-way."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with console.status("stopping workers and Redis..."):
            stack.stop()
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def start_stack(settings: Settings, regions: list[str], *, workers_per_region: int = 1, tls: bool = False,
                redis_port: int = 0) -> LocalStack:
    stack = LocalStack(settings, log_dir=settings.data_dir / "logs", tls=tls, redis_port=redis_port)
    try:
        with console.status("starting embedded Redis, control worker and region workers..."):
            stack.start_redis()
            stack.start_control(beat=True)
            for region in regions:
                for _ in range(workers_per_region):
                    stack.start_region_worker(region)
            stack.wait_for_workers(len(regions) * workers_per_region, timeout_s=90)
            stack.wait_for_log("control", "ready.", timeout_s=60)
    except BaseException:
        stop_uninterruptibly(stack)
        raise
    return stack


def _progress(out: Console | None = None) -> Progress:
    return Progress(TextColumn("[bold]{task.description:<11}"), BarColumn(), TaskProgressColumn(),
                    TextColumn("{task.fields[chunks]} chunks  {task.fields[extra]}"), TimeElapsedColumn(),
                    console=out or console)


def follow(app: HydraCelery, job_ids: list[str], labels: list[str], *, poll_s: float = 0.2,
           out: Console | None = None) -> list[JobView]:
    """Show a progress bar per job (on ``out``, default stdout) until all are final; return the final records."""
    with _progress(out) as progress:
        bars = [progress.add_task(label, total=None, extra="", chunks="") for label in labels]
        while True:
            jobs = [store.get_job(app.redis, job_id) for job_id in job_ids]
            for bar, job in zip(bars, jobs):
                extra = ""
                if job.kind == "pi" and job.units_done:
                    extra = f"π≈{4 * job.hits / job.units_done:.6f}"
                if job.state in ("failed", "cancelled"):
                    extra = job.state.value
                progress.update(bar, total=job.units_total, completed=job.units_done, extra=extra,
                                chunks=f"{job.chunks_done}/{job.chunks_total}")
            if all(job.is_final for job in jobs):
                return jobs
            time.sleep(poll_s)


def ledger_view(app: HydraCelery) -> dict[str, Any]:
    """Tokens per worker and in total, and the carbon totals, read before the stack stops."""
    from .grid.accounting import totals
    from .ledger import book

    balances = {}
    for worker in list_workers(app.redis):
        if worker.public_key:
            balances[worker.worker_id] = book.balance(app.redis, worker.public_key)["balance"]
    return {"balances": balances, "tokens": book.token_metrics(app.redis),
            "carbon": totals(app.redis.hgetall(keys.SUSTAINABILITY))}


def summary(pi_job: JobView, mandel_job: JobView, image: Path | None, wall_s: float,
            ledger: dict[str, Any] | None = None) -> None:
    table = Table(title="Hydra demo summary", show_header=False)
    r = pi_job.result or {}
    if r:
        table.add_row("π estimate", f"{r['estimate']:.9f}  ± {r['std_error']:.2e} (1σ)")
        table.add_row("π 95% CI", f"[{r['ci95'][0]:.9f}, {r['ci95'][1]:.9f}]  |error| {r['abs_error']:.2e}")
        table.add_row("π samples / hits", f"{r['samples']:,} / {r['hits']:,}")
    table.add_row("π job", _job_line(pi_job))
    m = mandel_job.result or {}
    if m:
        table.add_row("Mandelbrot", f"{m['width']}x{m['height']}, max_iter {m['max_iter']}, "
                                    f"{m['iterations']:,} iterations")
    table.add_row("Mandelbrot job", _job_line(mandel_job))
    table.add_row("image", str(image) if image else "(none)")
    if ledger:
        t, c = ledger["tokens"], ledger["carbon"]
        table.add_row("tokens", f"{t['supply']} minted for {t['mints']} accepted chunks, in {t['accounts']} accounts")
        table.add_row("carbon", f"{c['carbon_g']:.3f} g CO2 for {c['energy_kwh'] * 1000:.2f} Wh; carbon-blind "
                                f"routing: {c['counterfactual_g']:.3f} g")
    table.add_row("demo wall time", f"{wall_s:.1f} s")
    console.print(table)
    workers = Table(title="work per worker")
    for col in ("worker", "job", "chunks", "units", "busy s"):
        workers.add_column(col, justify="right" if col != "worker" else "left")
    for job in (pi_job, mandel_job):
        for worker_id, w in sorted(job.workers.items()):
            workers.add_row(worker_id, job.kind.value, str(w.chunks), f"{w.units:,}", f"{w.elapsed_ms / 1000:.2f}")
    console.print(workers)
    if ledger and ledger["balances"]:
        earned = Table(title="tokens earned")
        earned.add_column("worker")
        earned.add_column("balance", justify="right")
        for worker_id, balance in sorted(ledger["balances"].items()):
            earned.add_row(worker_id, balance)
        console.print(earned)


def _job_line(job: JobView) -> str:
    wall = f"{job.wall_s:.2f}s" if job.wall_s else "-"
    return (f"{job.state}, {job.chunks_done}/{job.chunks_total} chunks, wall {wall}, "
            f"re-sent {job.redispatched}, duplicates {job.duplicates}")


@contextlib.contextmanager
def demo_workspace(parent: Path | None, *, keep: bool) -> Iterator[Path]:
    """A new, empty directory for one demo run, made inside ``parent`` (HYDRA_DATA_DIR) or the system
    temp dir. Unless ``keep``, it is removed afterwards, and so is ``parent`` if this call created it
    and it is empty again; nothing else is ever deleted (a data dir may hold a volunteer's key)."""
    created_parent = parent is not None and not parent.exists()
    if parent is not None:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    workspace = Path(tempfile.mkdtemp(prefix="hydra-demo-", dir=parent))
    try:
        yield workspace
    finally:
        if not keep:
            shutil.rmtree(workspace, ignore_errors=True)
            if created_parent and parent is not None:
                with contextlib.suppress(OSError):
                    parent.rmdir()  # only if empty


def run_demo(settings: Settings, *, parent_dir: Path | None, samples: float, width: int, height: int,
             max_iter: int, regions: list[str], out: Path, keep_data: bool) -> bool:
    """Run the demo in its own new data dir (see :func:`demo_workspace`); True if both jobs are done."""
    _sigterm_as_interrupt()
    with demo_workspace(parent_dir, keep=keep_data) as data_dir:
        where = "kept afterwards" if keep_data else "removed at the end; --keep-data keeps them"
        console.print(f"[bold]Hydra demo[/bold] - data and logs in {data_dir} ({where})")
        return _demo(settings.with_(data_dir=data_dir), samples=samples, width=width, height=height,
                     max_iter=max_iter, regions=regions, out=out)


def _demo(settings: Settings, *, samples: float, width: int, height: int, max_iter: int, regions: list[str],
          out: Path) -> bool:
    t0 = time.perf_counter()
    stack = start_stack(settings, regions)
    try:
        app = create_app(stack.child_settings())
        console.print(f"stack up in {time.perf_counter() - t0:.1f}s: Redis, control worker + beat, "
                      f"workers in {', '.join(regions)}")
        pi_job = submit_job(app, {"kind": "pi", "params": {"samples": samples, "seed": 2026}})
        mandel_job = submit_job(app, {"kind": "mandelbrot", "params": {
            "width": width, "height": height, "max_iter": max_iter, "center_x": -0.75, "center_y": 0.0,
            "span": 3.0}})
        pi_job, mandel_job = follow(app, [pi_job.id, mandel_job.id], ["π", "Mandelbrot"])
        ledger = ledger_view(app)
        png = job_png(app, mandel_job.id)
        image = None
        if png:
            out.write_bytes(png)
            image = out.resolve()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping everything Hydra started...")
        return False
    finally:
        stop_uninterruptibly(stack)
    summary(pi_job, mandel_job, image, time.perf_counter() - t0, ledger)
    return pi_job.state == "done" and mandel_job.state == "done"


def run_up(settings: Settings, *, regions: list[str], workers_per_region: int, web_port: int,
           flower_port: int, web_host: str = "127.0.0.1", tls: bool = False, redis_port: int = 0) -> None:
    """Start the stack, say it is up only once the dashboard and Flower answer, then keep every part
    running (see :mod:`hydra_tasks.supervise`) until Ctrl-C or SIGTERM. StackError if a part cannot
    be started or kept running; everything started is stopped either way."""
    _sigterm_as_interrupt()
    ports = {"--web-port": web_port, "--flower-port": flower_port}
    if redis_port:
        ports["--redis-port"] = redis_port
    _check_ports(ports)
    stack = start_stack(settings, regions, workers_per_region=workers_per_region, tls=tls, redis_port=redis_port)
    try:
        with console.status("starting the dashboard and Flower..."):
            stack.start_webapp(port=web_port, host=web_host, flower_url=_own_flower_link(web_host, flower_port))
            stack.start_flower(port=flower_port)
            stack.wait_ready("webapp", timeout_s=60)
            stack.wait_ready("flower", timeout_s=60)
        # For `--url` discovery; tied to this supervising process, which outlives webapp restarts.
        write_web_info(settings.data_dir, port=web_port, pid=os.getpid(), host=web_host,
                       tls=bool(stack.web_url and stack.web_url.startswith("https:")))
        console.print(f"[bold green]Hydra is up.[/] dashboard {stack.web_url}  "
                      f"Flower http://127.0.0.1:{flower_port}")
        if tls and stack.redis_url:
            port = stack.redis_url.rsplit(":", 1)[1].split("/")[0]
            console.print(f"Redis serves TLS only on port {port} (every interface). Volunteers need "
                          f"HYDRA_REDIS_URL=rediss://:PASSWORD@THIS-HOST:{port}/0 and HYDRA_REDIS_CA set to a "
                          f"copy of {stack.tls_files().ca} (`hydra tls ca`); THIS-HOST must be a name the "
                          "certificate holds (HYDRA_PUBLIC_HOST).", markup=False, highlight=False)
        console.print(f"Redis state and logs: {settings.data_dir}; API token file: {settings.data_dir / 'api_token'}")
        console.print("Submit work with `hydra submit pi --samples 1e9 --wait`. Ctrl-C stops everything.")
        Supervisor(stack.supervised_parts(), say=_say).run()
    except KeyboardInterrupt:
        pass
    finally:
        stop_uninterruptibly(stack)


def _check_ports(ports: dict[str, int]) -> None:
    """Fail before starting anything if a port is taken (or given twice)."""
    if len(set(ports.values())) != len(ports):
        raise StackError(f"{' and '.join(ports)} must differ; got {ports}.")
    for option, port in ports.items():
        if not port_is_free(port):
            raise StackError(f"Port {port} on 127.0.0.1 is already in use (by another program, or another "
                             f"`hydra up`); stop that, or choose another port with {option} PORT.")


def _say(line: str) -> None:
    console.print(f"{time.strftime('%H:%M:%S')} {line}", style="yellow", markup=False, highlight=False)


def print_status(app: HydraCelery, *, limit: int) -> None:
    jobs = Table(title="jobs")
    for col in ("id", "kind", "state", "progress", "chunks", "result"):
        jobs.add_column(col)
    for job in store.list_jobs(app.redis, limit=limit):
        result = job.result or {}
        text = f"π={result['estimate']:.8f}" if "estimate" in result else (job.error or job.waiting or "")
        jobs.add_row(job.id, job.kind.value, job.state.value, f"{job.progress:.0%}",
                     f"{job.chunks_done}/{job.chunks_total}", text)
    console.print(jobs)
    workers = Table(title="workers")
    for col in ("id", "region", "state", "last seen", "ISA", "M samples/s", "chunks"):
        workers.add_column(col)
    now = time.time()
    for w in list_workers(app.redis):
        workers.add_row(w.worker_id, w.region, w.state.value, f"{max(now - w.last_seen, 0):.0f}s ago", w.isa,
                        f"{w.pi_samples_per_s / 1e6:.0f}", str(w.chunks_done))
    console.print(workers)
