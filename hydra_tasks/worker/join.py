"""A volunteer joining a Hydra deployment with the credentials its operator issued.

``hydra volunteer add NAME`` (operator) prints a join token or writes a credentials file
(:class:`hydra_tasks.trust.volunteers.Credentials`): the volunteer's own Redis user and password,
its worker id, the regions it was admitted to, the deployment's CA (with TLS) and a one-time join
secret. ``hydra worker --join FILE|TOKEN`` stores them in the volunteer's data dir (mode 0600)
and runs the Celery worker with the settings its Redis user allows, and no others:

* it consumes only its region queues and its own direct queue ``<worker id>.dq2``, and never
  declares a queue (declaring writes kombu's shared ``_kombu.binding.*`` sets);
* kombu's unacked bookkeeping goes to keys of its own (``hydra.unacked.<name>`` ...), not the
  shared ``unacked`` hash;
* no remote control (pidbox) and no worker events, which would publish on shared channels;
* it publishes to one queue, ``hydra.intake``, and keeps no results.

With a Sentinel-managed deployment (``redis+sentinel://`` in the credentials; ARCHITECTURE.md, "High
availability") the worker asks the Sentinels for the primary, with its own user (which may only ask
that), and follows a failover without a restart.

The first registration carries the join secret, which binds the volunteer's Ed25519 key to its
name (:mod:`hydra_tasks.intake`); after that the key alone identifies it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kombu import Exchange, Queue

from .. import keys
from ..errors import ConfigError, HydraError
from ..redis_conn import kombu_url
from ..secrets_io import write_private
from ..settings import Settings
from ..trust.volunteers import Credentials

CREDENTIALS_FILE = "volunteer.json"
CA_FILE = "volunteer-ca.pem"


def load(settings: Settings) -> Credentials:
    """The credentials ``HYDRA_JOIN_FILE`` names; ConfigError saying what to fix otherwise."""
    try:
        return Credentials.load(settings.join_file)
    except HydraError as exc:
        raise ConfigError(f"HYDRA_JOIN_FILE={settings.join_file}: {exc}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"HYDRA_JOIN_FILE={settings.join_file} is not a Hydra credentials file ({exc}); "
                          "use the file or token `hydra volunteer add` printed.") from None


def install(settings: Settings, source: str) -> tuple[Path, Credentials]:
    """Store the credentials from a file or token in the data dir; returns the file's path."""
    creds = Credentials.load(source)
    return store(settings, creds), creds


def store(settings: Settings, creds: Credentials) -> Path:
    """Write ``creds`` (mode 0600) and the deployment's CA, if any, into the data dir."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = settings.data_dir / CREDENTIALS_FILE
    creds.write(path)
    if creds.ca_pem:
        write_private(settings.data_dir / CA_FILE, creds.ca_pem)
    return path


def child_env(settings: Settings, path: Path, creds: Credentials) -> dict[str, str]:
    """The HYDRA_* variables the volunteer's worker runs with."""
    env = {"HYDRA_JOIN_FILE": str(path), "HYDRA_REDIS_URL": creds.redis_url}
    if creds.ca_pem:
        env["HYDRA_REDIS_CA"] = str(settings.data_dir / CA_FILE)
    return env


def worker_argv(creds: Credentials, *, concurrency: int, pool: str, loglevel: str) -> list[str]:
    import sys

    queues = [keys.region_queue(r) for r in creds.regions] + [keys.direct_queue(creds.worker_id)]
    return [sys.executable, "-m", "celery", "-A", "hydra_tasks", "worker", "-Q", ",".join(queues),
            "-n", creds.worker_id, "-c", str(concurrency), "-P", pool, "--loglevel", loglevel,
            "--without-heartbeat", "--without-mingle", "--without-gossip"]


def celery_settings(creds: Credentials, base: dict[str, Any], *, prefetch: int = 2) -> dict[str, Any]:
    """``base`` (the control plane's Celery settings) narrowed to what a volunteer's Redis user allows.

    ``prefetch`` (per process; ``HYDRA_INFLIGHT_PER_SLOT``): a volunteer fetches the next chunk leased
    to it while it computes the current one. The control plane leases it that many chunks per process
    anyway, so nothing is taken from other workers; with a prefetch of 1 the next chunk is fetched only
    after the result is published and the chunk acked, three round trips of idle time per chunk (about
    1 s on a 300 ms link). That idle time also entered the speed model (a holder's observed time is at
    least its send-to-result interval over its window), which cut chunks shorter, which added more idle
    time: in the netns cluster a lone volunteer behind 300 ms RTT fell to 0.3 s chunks, one every 1.3 s."""
    no_declare = [Queue(q, Exchange(q), routing_key=q, no_declare=True)
                  for q in (keys.region_queue(r) for r in creds.regions)]
    no_declare.append(Queue(keys.direct_queue(creds.worker_id), Exchange("C.dq2", "direct"), routing_key=creds.worker_id,
                            no_declare=True))
    no_declare.append(Queue(keys.INTAKE_QUEUE, Exchange(keys.INTAKE_QUEUE), routing_key=keys.INTAKE_QUEUE,
                            no_declare=True))
    unacked, index, mutex = keys.volunteer_unacked(creds.name)
    transport = {**base["broker_transport_options"], "unacked_key": unacked, "unacked_index_key": index,
                 "unacked_mutex_key": mutex}
    out = {k: v for k, v in base.items() if k not in ("result_backend", "beat_schedule")}
    out.update({"broker_url": kombu_url(creds.redis_url), "worker_direct": False, "task_queues": no_declare,
                "task_create_missing_queues": False, "task_default_queue": keys.INTAKE_QUEUE,
                "worker_enable_remote_control": False, "worker_send_task_events": False,
                "broker_transport_options": transport, "worker_prefetch_multiplier": max(1, prefetch)})
    return out
