"""The ``hydra`` command (also ``python -m hydra_tasks``)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .celery_app import REDIS_DOWN_ERRORS, HydraCelery, create_app, redis_down_message, resolve_redis_url
from .errors import HydraError
from .settings import Settings

if TYPE_CHECKING:
    from .jobs.view import JobView


def _settings() -> Settings:
    return Settings.from_env()


def _app(settings: Settings | None = None) -> HydraCelery:
    return create_app(settings or _settings())


_URL_HELP = "The Hydra webapp (default: HYDRA_URL, else the one `hydra up` runs for this data dir, else " \
            "http://127.0.0.1:5000)."


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


class _HydraGroup(click.Group):
    """Turn HydraErrors and an unreachable Redis into a one-line message and exit code 2, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HydraError as exc:
            click.echo(f"hydra: error: {exc}", err=True)
            sys.exit(2)
        except REDIS_DOWN_ERRORS as exc:
            click.echo(f"hydra: error: {redis_down_message(_redis_url_or_none(), exc)}", err=True)
            sys.exit(2)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands in one section per reader (README: the two commands, volunteers, operators);
        a command missing from :data:`COMMAND_SECTIONS` lands under "Other commands"."""
        listed: set[str] = set()
        for title, names in COMMAND_SECTIONS:
            rows = self._rows(ctx, [name for name in names if name in self.commands], formatter)
            listed.update(names)
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
        rest = self._rows(ctx, sorted(set(self.list_commands(ctx)) - listed), formatter)
        if rest:
            with formatter.section("Other commands"):
                formatter.write_dl(rest)

    def _rows(self, ctx: click.Context, names: list[str], formatter: click.HelpFormatter) -> list[tuple[str, str]]:
        limit = max(formatter.width - 6 - max((len(name) for name in names), default=0), 20)
        rows = []
        for name in names:
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        return rows


# `hydra --help` lists commands by who runs them, in the order the README introduces them.
COMMAND_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Try it", ("demo",)),
    ("Volunteers", ("worker", "key", "tokens", "profile", "dashboard", "grid-info")),
    ("Operators: jobs", ("up", "submit", "status", "cancel", "jobs", "reopen")),
    ("Operators: volunteers, ledger, certificates",
     ("volunteer", "workers", "quarantine", "ledger", "tls")),
)


def _redis_url_or_none() -> str | None:
    try:
        return resolve_redis_url(_settings())
    except HydraError:
        return None


@click.group(cls=_HydraGroup)
@click.version_option(package_name="hydra-volunteer", prog_name="hydra", message="%(prog)s %(version)s")
def main() -> None:
    """Hydra: volunteer computing on Celery + Redis.

    Volunteers: `hydra worker --join TOKEN` joins a project. Operators: `hydra up` runs one on this
    machine. `hydra COMMAND --help` explains each command; README.md has a guide for each reader.
    """


# --- jobs ---------------------------------------------------------------------------------
@main.group()
def submit() -> None:
    """Submit a job (prints the job as JSON)."""


def _submit(raw: dict[str, Any], wait: bool, out: Path | None = None) -> None:
    from .jobs.submit import submit_job

    app = _app()
    job = submit_job(app, raw)
    if not wait:
        _echo_json(job.to_json())
        return
    # At once, on stderr (stdout stays the final JSON): the job runs even if this wait is interrupted.
    click.echo(f"hydra: job {job.id} submitted; waiting for it (Ctrl-C stops waiting, not the job; "
               f"`hydra status {job.id}` shows it later)", err=True)
    job = _follow(app, job) if sys.stderr.isatty() else _wait(app, job.id)
    shown = job.to_json()
    if out is not None and job.state == "done":
        from .jobs.submit import job_png

        png = job_png(app, job.id)
        if png:
            out.write_bytes(png)
            shown["image_path"] = str(out)
    _echo_json(shown)
    if job.state != "done":
        sys.exit(1)


def _follow(app: HydraCelery, job: JobView) -> JobView:
    """Wait with a progress bar on stderr."""
    from rich.console import Console

    from .console import follow

    label = "π" if job.kind == "pi" else str(job.kind)
    return follow(app, [job.id], [label], out=Console(stderr=True))[0]


def _wait(app: HydraCelery, job_id: str, *, poll_s: float = 0.25) -> JobView:
    from .jobs import store

    while True:
        job = store.get_job(app.redis, job_id)
        if job.is_final:
            return job
        time.sleep(poll_s)


_common = [
    click.option("--priority", type=int, default=5, show_default=True, help="0 (lowest) to 9."),
    click.option("--deadline", default=None,
                 help="When the job should finish: a time from now (+2h, +30m, +1d) or ISO-8601 with a timezone; "
                      "it may wait for cleaner power until then."),
    click.option("--delay-weight", type=float, default=None,
                 help="With --deadline: what an hour of waiting for cleaner power is worth, in gCO2/kWh; the job "
                      "waits only for hours cleaner by more than that per hour (default 0: as long as the "
                      "deadline allows)."),
    click.option("--wait", is_flag=True, help="Wait for the job to finish and print its result."),
]


def _with_common(f: Any) -> Any:
    for option in reversed(_common):
        f = option(f)
    return f


@submit.command("pi")
@click.option("--samples", type=float, required=True, help="Total number of samples, e.g. 1e9.")
@click.option("--seed", type=int, default=None, help="Random seed (default: random, recorded in the job).")
@_with_common
def submit_pi(samples: float, seed: int | None, priority: int, deadline: str | None, delay_weight: float | None,
              wait: bool) -> None:
    """Monte-Carlo estimate of π."""
    params: dict[str, Any] = {"samples": samples}
    if seed is not None:
        params["seed"] = seed
    _submit(_spec("pi", params, priority, deadline, delay_weight), wait)


@submit.command("mandelbrot")
@click.option("--width", type=int, default=800, show_default=True)
@click.option("--height", type=int, default=600, show_default=True)
@click.option("--max-iter", type=int, default=256, show_default=True)
@click.option("--center", nargs=2, type=float, default=None, help="Centre X Y of the view.")
@click.option("--span", type=float, default=None, help="Width of the view in the complex plane.")
@click.option("--bounds", nargs=4, type=float, default=None, help="XMIN XMAX YMIN YMAX (instead of centre/span).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --wait: write the PNG here.")
@_with_common
def submit_mandelbrot(width: int, height: int, max_iter: int, center: tuple[float, float] | None,
                      span: float | None, bounds: tuple[float, ...] | None, out: Path | None, priority: int,
                      deadline: str | None, delay_weight: float | None, wait: bool) -> None:
    """Render the Mandelbrot set."""
    params: dict[str, Any] = {"width": width, "height": height, "max_iter": max_iter}
    if bounds:
        params.update(zip(("xmin", "xmax", "ymin", "ymax"), bounds))
    if center:
        params.update(center_x=center[0], center_y=center[1])
    if span is not None:
        params["span"] = span
    _submit(_spec("mandelbrot", params, priority, deadline, delay_weight), wait, out)


def _spec(kind: str, params: dict[str, Any], priority: int, deadline: str | None,
          delay_weight: float | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"kind": kind, "params": params, "priority": priority, "deadline": deadline}
    if delay_weight is not None:
        spec["delay_weight"] = delay_weight
    return spec


@main.command()
@click.argument("job_id", required=False)
@click.option("--limit", type=int, default=20, show_default=True)
def status(job_id: str | None, limit: int) -> None:
    """Show one job (JSON), or a table of recent jobs and live workers."""
    from .jobs import store

    app = _app()
    if job_id:
        _echo_json(store.get_job(app.redis, job_id).to_json())
        return
    from .console import print_status

    print_status(app, limit=limit)


@main.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a queued or running job."""
    from .jobs import store

    app = _app()
    _echo_json(store.cancel_job(app.redis, job_id, detail_s=app.settings.job_detail_s).to_json())


@main.command()
@click.argument("job_id")
def reopen(job_id: str) -> None:
    """Re-open a done job that holds results from a worker caught cheating later (its 'suspect'
    count): those chunks are recomputed by other workers and the result computed again."""
    from .jobs import store

    _echo_json(store.reopen_job(_app().redis, job_id).to_json())


@main.group("jobs")
def jobs_group() -> None:
    """Operator tools for jobs (direct Redis access)."""


@jobs_group.command("delete")
@click.argument("job_id")
def jobs_delete(job_id: str) -> None:
    """Delete a finished, failed or cancelled job and all its data (the token ledger keeps its mints)."""
    from .jobs import store

    store.delete_job(_app().redis, job_id)
    _echo_json({"deleted": job_id})


@jobs_group.command("prune")
@click.option("--older-than", "older_than", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Remove finished jobs that ended more than SECONDS ago (default: HYDRA_JOB_RETENTION_S).")
@click.option("--dry-run", is_flag=True, help="Only list the jobs that would be removed.")
def jobs_prune(older_than: float | None, dry_run: bool) -> None:
    """Remove finished, failed and cancelled jobs that ended long ago (the sweep does it too, after
    HYDRA_JOB_RETENTION_S): their result and summary go; the token ledger keeps their mints."""
    from .jobs import retention

    app = _app()
    age = app.settings.job_retention_s if older_than is None else older_than
    if age <= 0 and older_than is None:
        raise click.ClickException("HYDRA_JOB_RETENTION_S is 0: finished jobs are kept for ever; pass --older-than "
                                   "SECONDS (e.g. 2592000 for 30 days) to prune them now.")
    if dry_run:
        _echo_json({"would_prune": retention.due(app.redis, age, limit=10**9), "older_than_s": age})
        return
    pruned: list[str] = []
    while batch := retention.prune(app.redis, age):
        pruned += batch
    _echo_json({"pruned": pruned, "older_than_s": age})


@main.group("workers")
def workers_group() -> None:
    """Operator tools for the worker registry (direct Redis access)."""


@workers_group.command("prune")
@click.option("--dry-run", is_flag=True, help="Only list the workers that would be pruned.")
def workers_prune(dry_run: bool) -> None:
    """Remove workers offline for longer than HYDRA_WORKER_RETENTION_S (the sweep does it too): their
    registry entry and queue go; their token account, journal and results log stay. A pruned worker
    that comes back registers again."""
    from .worker import registry

    app = _app()
    settings = app.settings
    if settings.worker_retention_s <= 0:
        raise click.ClickException("HYDRA_WORKER_RETENTION_S is 0: offline workers are kept for ever; set it to a "
                                   "number of seconds (e.g. 604800 for a week) to prune them.")
    now = time.time()
    if dry_run:
        due = sorted(w.worker_id for w in registry.list_workers(app.redis) if registry.prunable(w, settings, now))
        _echo_json({"would_prune": due, "retention_s": settings.worker_retention_s})
        return
    _echo_json({"pruned": registry.prune_offline(app.redis, settings, now=now),
                "retention_s": settings.worker_retention_s})


# --- processes ----------------------------------------------------------------------------
@main.command()
@click.option("--region", default=None, help="Region this machine is in, e.g. eu-west (default: HYDRA_REGION).")
@click.option("--name", default=None, help="Worker name (default: REGION-PID).")
@click.option("--concurrency", "-c", type=int, default=None, help="Parallel chunks (default: CPU count).")
@click.option("--pool", type=click.Choice(["prefork", "threads", "solo"]), default="prefork", show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=None,
              help="Threads per chunk's kernel (HYDRA_KERNEL_THREADS); e.g. -c 1 --threads 4 on a 4-core machine.")
@click.option("--cpu-limit", type=click.FloatRange(1, 100), default=None,
              help="Compute at most this percent of the time (HYDRA_CPU_LIMIT), e.g. 50.")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--join", "join_source", default=None, metavar="FILE|TOKEN",
              help="Join with the credentials file or token `hydra volunteer add` gave you (stored in "
                   "HYDRA_DATA_DIR; later starts may omit it).")
def worker(region: str | None, name: str | None, concurrency: int | None, pool: str, threads: int | None,
           cpu_limit: float | None, loglevel: str, join_source: str | None) -> None:
    """Run a volunteer worker for REGION (wraps `celery -A hydra_tasks worker -Q hydra.region.REGION`).

    With --join (or HYDRA_JOIN_FILE), run as an enrolled volunteer: its own Redis user, its admitted
    regions and its own queue only (--region and --name come from the credentials)."""
    from . import keys
    from .settings import REGION_RE
    from .stack import celery_worker_argv
    from .worker import join

    settings = _settings()
    slots = concurrency or max(1, (os.cpu_count() or 1) // (threads or 1))
    stored = settings.data_dir / join.CREDENTIALS_FILE
    if join_source is not None or settings.join_file or stored.exists():
        if region or name:
            raise click.UsageError("--region and --name come from the volunteer's credentials; leave them out.")
        try:
            if join_source is not None:
                path, creds = join.install(settings, join_source)
            else:
                path = Path(settings.join_file) if settings.join_file else stored
                creds = join.load(settings.with_(join_file=str(path)))
        except HydraError as exc:
            raise click.ClickException(str(exc)) from None
        os.environ.update(join.child_env(settings, path, creds))
        argv = join.worker_argv(creds, concurrency=slots, pool=pool, loglevel=loglevel)
        click.echo(f"joining as {creds.worker_id} (regions {', '.join(creds.regions)})", err=True)
    else:
        region = region or settings.region
        if not REGION_RE.match(region):
            raise click.BadParameter("use lowercase letters, digits and '-'", param_hint="--region")
        argv = celery_worker_argv([keys.region_queue(region)], name=name or f"{region}-{os.getpid()}",
                                  concurrency=slots, pool=pool, loglevel=loglevel)
    if threads is not None:
        os.environ["HYDRA_KERNEL_THREADS"] = str(threads)
    if cpu_limit is not None:
        os.environ["HYDRA_CPU_LIMIT"] = str(cpu_limit)
    os.execv(argv[0], argv)


@main.command()
@click.option("--regions", default="eu-west,us-east", show_default=True, help="Comma-separated regions.")
@click.option("--workers-per-region", type=int, default=1, show_default=True)
@click.option("--web-port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--web-host", default="127.0.0.1", show_default=True,
              help="Address the webapp listens on; anything but loopback (e.g. 0.0.0.0) is served over HTTPS only.")
@click.option("--flower-port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option("--tls", is_flag=True,
              help="Serve Redis over TLS only (rediss://, on every interface) with a CA and server certificate "
                   "made in HYDRA_DATA_DIR/tls; volunteers need ca.pem (HYDRA_REDIS_CA). Needs redis-server >= 7.")
@click.option("--isolate", is_flag=True,
              help="Multi-machine mode (HYDRA_ISOLATE): Redis >= 7 with ACLs, the default user off, one Redis user "
                   "per volunteer (hydra volunteer add); implied by --tls.")
@click.option("--redis-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port of the embedded Redis (0: a free one); volunteers on other machines need a fixed one.")
def up(regions: str, workers_per_region: int, web_port: int, web_host: str, flower_port: int, tls: bool,
       isolate: bool, redis_port: int) -> None:
    """Run a local stack (Redis, control worker + beat, region workers, webapp, Flower) until Ctrl-C.

    With --tls (multi-machine mode, which implies --isolate) Redis is reachable from other machines
    over TLS only, and only by enrolled volunteers; the local region workers are enrolled too."""
    from .console import run_up

    settings = _settings()
    if tls or isolate:
        settings = settings.with_(isolate=True)
    run_up(settings, regions=_regions(regions), workers_per_region=workers_per_region,
           web_port=web_port, flower_port=flower_port, web_host=web_host, tls=tls, redis_port=redis_port)


@main.group("tls")
def tls_group() -> None:
    """The control host's TLS certificates (HYDRA_DATA_DIR/tls): a private CA and a server certificate."""


@tls_group.command("init")
def tls_init() -> None:
    """Create the CA and server certificate, or renew what is due (names changed, expiring); print their paths."""
    from .trust.tls import ensure_tls, server_names

    settings = _settings()
    files = ensure_tls(settings)
    _echo_json({"ca": str(files.ca), "cert": str(files.cert), "key": str(files.key),
                "names": server_names(settings)})


@tls_group.command("ca")
def tls_ca() -> None:
    """Print the CA certificate (PEM) volunteers need as HYDRA_REDIS_CA."""
    from .errors import TlsError
    from .trust.tls import ca_pem, tls_files

    settings = _settings()
    pem = ca_pem(settings)
    if pem is None:
        raise TlsError(f"There is no CA in {tls_files(settings).ca.parent}; create it with `hydra tls init` "
                       "(or `hydra up --tls`).")
    click.echo(pem, nl=False)


@main.command()
@click.option("--samples", type=float, default=4e9, show_default=True, help="π samples.")
@click.option("--width", type=int, default=1200, show_default=True, help="Mandelbrot width in pixels.")
@click.option("--height", type=int, default=900, show_default=True, help="Mandelbrot height in pixels.")
@click.option("--max-iter", type=int, default=1000, show_default=True)
@click.option("--regions", default="eu-west,us-east", show_default=True, help="Comma-separated regions.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("hydra-mandelbrot.png"),
              show_default=True, help="Where to write the Mandelbrot PNG.")
@click.option("--keep-data", is_flag=True, help="Keep the demo's data and logs directory.")
def demo(samples: float, width: int, height: int, max_iter: int, regions: str, out: Path, keep_data: bool) -> None:
    """Start everything locally, run a π and a Mandelbrot job with progress, print a summary, stop."""
    from .console import run_demo

    settings, parent_dir = _demo_settings()
    ok = run_demo(settings, parent_dir=parent_dir, samples=samples, width=width, height=height, max_iter=max_iter,
                  regions=_regions(regions), out=out, keep_data=keep_data)
    sys.exit(0 if ok else 1)


def _regions(text: str) -> list[str]:
    from .settings import REGION_RE

    regions = [r.strip() for r in text.split(",") if r.strip()]
    bad = [r for r in regions if not REGION_RE.match(r)]
    if not regions or bad:
        raise click.BadParameter(f"bad region name(s) {bad}; use lowercase letters, digits and '-'",
                                 param_hint="--regions")
    return regions


def _demo_settings() -> tuple[Settings, Path | None]:
    """Quick sweeps unless HYDRA_* says otherwise, and where the demo makes its own new data dir:
    inside HYDRA_DATA_DIR if set, else in the system temp dir."""
    base = _settings()
    parent_dir = base.data_dir if "HYDRA_DATA_DIR" in os.environ else None
    quick = {"sweep_interval_s": 1.0, "heartbeat_s": 1.0, "worker_timeout_s": 5.0, "lease_s": 30.0}
    changes = {k: v for k, v in quick.items() if f"HYDRA_{k.upper()}" not in os.environ}
    return base.with_(**changes), parent_dir


if __name__ == "__main__":  # pragma: no cover
    main()


# --- identity -------------------------------------------------------------------------------
@main.group()
def key() -> None:
    """This volunteer's Ed25519 key: it is the token account, so keep a copy (hydra key export)."""


@key.command("show")
def key_show() -> None:
    """Print where the key is and its public half (the account id)."""
    from .trust import identity

    path = identity.key_path(_settings())
    _echo_json({"path": str(path), "account": identity.public_hex(identity.load_key(path))})


@key.command("export")
def key_export() -> None:
    """Print the key as one line, to import on another machine. Whoever has it owns the account."""
    from .trust import identity

    click.echo("hydra: this line is your account's secret key; store it like a password.", err=True)
    click.echo(identity.export_text(identity.load_key(identity.key_path(_settings()))))


@key.command("import")
@click.argument("source", type=click.File("r"), default="-")
@click.option("--replace", is_flag=True, help="Replace a different key already on this machine (it is lost).")
def key_import(source: Any, replace: bool) -> None:
    """Install an exported key (from SOURCE, or stdin) as this machine's worker key."""
    from .trust import identity

    path = identity.key_path(_settings())
    imported = identity.import_key(source.read(), path, replace=replace)
    _echo_json({"path": str(path), "account": identity.public_hex(imported)})


@main.command("grid-info")
@click.option("--worker", "worker_id", required=True, help="The worker's id as registered (see /api/workers).")
@click.option("--zone", required=True, help="Grid zone this machine draws from, e.g. FR, DE, US-CAL-CISO.")
@click.option("--renewable-share", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of its power made on site (e.g. 0.6 with home solar).")
@click.option("--url", default=None, help=_URL_HELP)
def grid_info(worker_id: str, zone: str, renewable_share: float, url: str | None) -> None:
    """Report this worker's grid zone and on-site renewables, signed with its key."""
    import requests

    from .trust import identity
    from .grid.site import signed_report

    settings = _settings()
    url = _web_url(url, settings)
    path = _worker_key_path(settings, worker_id)
    body = signed_report(identity.load_key(path), worker_id, zone, renewable_share)
    try:
        response = requests.post(url.rstrip("/") + "/api/update_grid_info", json=body, timeout=10,
                                 verify=_tls_verify(settings))
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None
    if response.status_code == 401:
        raise click.ClickException(
            f"401: {_api_error(response)} The report was signed with the key in {path}; if worker {worker_id} "
            "runs with another key, choose it with HYDRA_KEY_FILE=/path/to/that.key.")
    if response.status_code != 200:
        raise click.ClickException(f"{response.status_code}: {_api_error(response)}")
    _echo_json(response.json())


def _worker_key_path(settings: Settings, worker_id: str) -> Path:
    """HYDRA_KEY_FILE if set; else the key `hydra up` made for that worker (<data dir>/keys/<name>.key,
    for the worker id <name>@<host>) if there is one; else this machine's key (<data dir>/worker.key)."""
    from .trust import identity

    name = worker_id.split("@", 1)[0]
    if not settings.key_file and _FILE_NAME_RE.match(name):
        candidate = settings.data_dir / "keys" / f"{name}.key"
        if candidate.is_file():
            return candidate
    return identity.key_path(settings)


_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$")


def _tls_verify(settings: Settings | None = None) -> str | bool:
    """What requests verifies an https:// webapp with: the operator's CA (HYDRA_REDIS_CA, or this data
    dir's), else the system's CAs."""
    from .redis_conn import ca_file

    return ca_file(settings or _settings()) or True


def _web_url(url: str | None, settings: Settings | None = None) -> str:
    from .discovery import web_url

    return url or web_url(settings or _settings())


def _api_error(response: Any) -> str:
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):  # application/problem+json: 'detail' (older webapps sent only 'error')
        for member in ("detail", "error"):
            if isinstance(data.get(member), str):
                return str(data[member])
    return str(response.text[:300])


# --- tokens ---------------------------------------------------------------------------------
@main.group()
def tokens() -> None:
    """This volunteer's tokens: balance and signed transfers (through the webapp)."""


def _api_get(url: str, path: str) -> Any:
    import requests

    try:
        response = requests.get(url.rstrip("/") + path, timeout=10, verify=_tls_verify())
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None
    if response.status_code != 200:
        raise click.ClickException(f"{response.status_code}: {_api_error(response)}")
    return response.json()


@tokens.command("balance")
@click.argument("who", required=False)
@click.option("--url", default=None, help=_URL_HELP)
def tokens_balance(who: str | None, url: str | None) -> None:
    """Balance of WHO (a worker id or account id; default: this machine's key)."""
    from .trust import identity

    who = who or identity.public_hex(identity.load_key(identity.key_path(_settings())))
    _echo_json(_api_get(_web_url(url), f"/api/worker_balance/{who}"))


@tokens.command("transfer")
@click.option("--to", "recipient", required=True, help="The recipient's account id, or a worker id.")
@click.option("--amount", required=True, help="Tokens to send, e.g. 1.5 (at most 6 decimals).")
@click.option("--url", default=None, help=_URL_HELP)
def tokens_transfer(recipient: str, amount: str, url: str | None) -> None:
    """Send tokens from this machine's account, signed with its key."""
    import requests

    from .ledger import book as ledger
    from .trust import identity

    url = _web_url(url)
    key = identity.load_key(identity.key_path(_settings()))
    if not identity.is_public_key(recipient):
        recipient = _api_get(url, f"/api/worker_balance/{recipient}")["account"]
    body = ledger.signed_transfer(key, recipient, ledger.parse_tokens(amount))
    try:
        response = requests.post(url.rstrip("/") + "/api/transfer_tokens", json=body, timeout=10,
                                 verify=_tls_verify())
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None
    if response.status_code not in (200, 201):
        raise click.ClickException(f"{response.status_code}: {_api_error(response)}")
    _echo_json(response.json())


# --- this volunteer's name and team on the leaderboard -----------------------------------------
@main.group()
def profile() -> None:
    """This volunteer's display name and team on the leaderboard (signed with its key)."""


@profile.command("set")
@click.option("--name", "display_name", default="", help="Display name (at most 40 characters; \"\" for none).")
@click.option("--team", default="", help="Team (at most 40 characters; \"\" for none).")
@click.option("--url", default=None, help=_URL_HELP)
def profile_set(display_name: str, team: str, url: str | None) -> None:
    """Set the display name and team the leaderboard shows for this machine's account (both replace
    what was set before; names need not be unique)."""
    import requests

    from .ledger import profiles
    from .trust import identity

    url = _web_url(url)
    body = profiles.signed_profile(identity.load_key(identity.key_path(_settings())), display_name, team)
    try:
        response = requests.post(url.rstrip("/") + "/api/profile", json=body, timeout=10, verify=_tls_verify())
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None
    if response.status_code != 200:
        raise click.ClickException(f"{response.status_code}: {_api_error(response)}")
    _echo_json(response.json())


@main.command()
@click.option("--url", default=None, help=_URL_HELP)
@click.option("--no-browser", is_flag=True, help="Only print the address.")
def dashboard(url: str | None, no_browser: bool) -> None:
    """Open the dashboard with this machine's account highlighted on the leaderboard (the account
    travels in the URL's fragment, #me=..., which the browser never sends to the server)."""
    import webbrowser

    from .trust import identity

    account = identity.public_hex(identity.load_key(identity.key_path(_settings())))
    address = f"{_web_url(url).rstrip('/')}/#me={account}"
    click.echo(address)
    if not no_browser:
        try:
            opened = webbrowser.open(address)
        except webbrowser.Error:
            opened = False
        if not opened:
            click.echo("hydra: no browser found here; open the address above in one.", err=True)


@main.group("ledger")
def ledger_group() -> None:
    """Operator tools for the token ledger (direct Redis access)."""


@ledger_group.command("verify")
def ledger_verify() -> None:
    """Replay the journal; exit 1 if it does not reproduce every balance and total."""
    from .ledger import audit as ledger_audit
    from .ledger import book as ledger

    from .ledger import chain
    from .trust import identity

    app = _app()
    data_dir = app.settings.data_dir
    checkpoints = chain.load(data_dir)  # signed by this control plane's key, when it has one
    control = identity.public_hex(chain.control_key(data_dir)) if (data_dir / chain.CONTROL_KEY_FILE).exists() \
        else None
    audit = ledger_audit.verify(app.redis, checkpoints=checkpoints, control_key=control)
    metrics = ledger.token_metrics(app.redis)
    click.echo(f"{audit.entries} journal entries ({audit.mints} mints, {audit.transfers} transfers, "
               f"{audit.reversals} reversals); "
               f"supply {metrics['supply']} tokens in {metrics['accounts']} accounts; "
               f"{len(checkpoints)} signed checkpoint(s) in {data_dir / chain.CHECKPOINT_FILE}")
    for problem in audit.problems[:50]:
        click.echo(f"  PROBLEM {problem}", err=True)
    if not audit.ok:
        click.echo(f"ledger verify: {len(audit.problems)} difference(s)", err=True)
        sys.exit(1)
    click.echo("ledger verify: OK: the journal's hash chain is whole, it holds every checkpointed entry, and it "
               "reproduces every balance, earned total and the supply")


@ledger_group.command("checkpoint")
def ledger_checkpoint() -> None:
    """Sign a checkpoint of the journal now (beat does it every HYDRA_CHECKPOINT_INTERVAL_S)."""
    from .ledger import chain

    app = _app()
    taken = chain.checkpoint_now(app.redis, app.settings.data_dir)
    if taken is None:
        click.echo("ledger checkpoint: the journal has not changed since the last checkpoint")
        return
    click.echo(f"ledger checkpoint: {taken.length} entries, head {taken.head[:16] or '(empty)'}, "
               f"supply {taken.supply} micro-tokens, signed by {taken.key[:16]}")


# --- volunteers (operator) -------------------------------------------------------------------
@main.group()
def volunteer() -> None:
    """Operator tools for volunteers in multi-machine mode: one Redis ACL user each (direct Redis access)."""


@volunteer.command("add")
@click.argument("name")
@click.option("--region", "regions", multiple=True,
              help="A region whose queue it may consume (repeat for several; default: HYDRA_REGION).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a credentials file (mode 0600) instead of printing a join token.")
@click.option("--host", default=None,
              help="The address volunteers reach Redis at (default: HYDRA_PUBLIC_HOST, else the host of the "
                   "operator's Redis URL).")
def volunteer_add(name: str, regions: tuple[str, ...], out: Path | None, host: str | None) -> None:
    """Enrol volunteer NAME: print its one-time join token (or write its credentials file)."""
    from .trust import volunteers

    app = _app()
    settings = app.settings
    network = volunteers.public_url(settings, app.redis_url)
    base = volunteers.volunteer_url(network, host=host or settings.public_host)
    credentials = volunteers.add(app.redis, settings, name, regions or (settings.region,),
                                 redis_url_for_volunteer=base,
                                 ca_pem=volunteers.deployment_ca(settings, network))
    where = base.split("://", 1)[1].rsplit("/", 1)[0]
    if out is not None:
        credentials.write(out)
        click.echo(f"hydra: enrolled {name} ({credentials.worker_id}, regions {', '.join(credentials.regions)}, "
                   f"Redis at {where}); its credentials are in this file (keep it secret):", err=True)
        click.echo(str(out))
        return
    click.echo(f"hydra: enrolled {name} ({credentials.worker_id}, regions {', '.join(credentials.regions)}, Redis "
               f"at {where}). Give the volunteer this token, privately; it joins once with "
               "`hydra worker --join TOKEN`:", err=True)
    click.echo(credentials.to_token())


@volunteer.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def volunteer_list(as_json: bool) -> None:
    """Every volunteer: name, worker id, regions, state, key, when enrolled."""
    from .trust import volunteers

    found = volunteers.list_volunteers(_app().redis)
    if as_json:
        _echo_json([v.to_json() for v in found])
        return
    rows = [("NAME", "WORKER ID", "REGIONS", "STATE", "KEY", "CREATED (UTC)")]
    rows += [(v.name, v.worker_id, ",".join(v.regions), v.state.value, v.public_key[:12] or "-",
              time.strftime("%Y-%m-%d %H:%M", time.gmtime(v.created_at))) for v in found]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if not found:
        click.echo("(no volunteers; enrol one with `hydra volunteer add NAME --region REGION`)")


@volunteer.command("revoke")
@click.argument("name")
def volunteer_revoke(name: str) -> None:
    """Revoke volunteer NAME now: its Redis user and connections go, its chunks are re-sent elsewhere."""
    from . import keys
    from .trust import volunteers

    app = _app()
    done = volunteers.revoke(app.redis, app.settings, name)
    if done.requeued:
        try:  # its chunks are first in their jobs' queues; the next sweep dispatches them anyway
            app.send_task("hydra.dispatch", queue=keys.CONTROL_QUEUE)
        except Exception:  # noqa: BLE001 - best effort
            pass
    click.echo(f"hydra: revoked {name}: {done.connections_killed} connection(s) closed, "
               f"{len(done.requeued)} chunk(s) re-queued; its key is unbound and its queues deleted.")


# --- quarantine (issue 12): workers caught by a spot check -----------------------------------
@main.group()
def quarantine() -> None:
    """Workers caught by an exact spot check: they get no work until an operator lifts it."""


@quarantine.command("list")
def quarantine_list() -> None:
    """Every quarantined worker, when and why."""
    from datetime import datetime, timezone

    from .worker.registry import list_workers

    caught = [w for w in list_workers(_app().redis) if w.quarantined]
    if not caught:
        click.echo("no worker is quarantined")
        return
    for w in caught:
        when = datetime.fromtimestamp(w.quarantined_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        click.echo(f"{w.worker_id}\t{when}\tfailed {w.audits_failed} spot check(s)\t{w.quarantined}")


@quarantine.command("lift")
@click.argument("worker_id")
def quarantine_lift(worker_id: str) -> None:
    """Let WORKER_ID take work again (its reputation starts from 0, so it is audited heavily)."""
    from .trust import reputation

    if not reputation.lift(_app().redis, worker_id):
        raise click.ClickException(f"{worker_id} is not quarantined; see `hydra quarantine list`.")
    click.echo(f"hydra: lifted the quarantine of {worker_id}")
