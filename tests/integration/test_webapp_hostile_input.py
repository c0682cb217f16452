"""Hostile HTTP input against the real webapp, served by a real HTTP server on 127.0.0.1 (the same
Werkzeug server ``hydra up`` runs) with a real embedded Redis: oversized bodies, chunked or not;
duplicate JSON keys; non-finite numbers; integer query parameters written in odd ways; and what a
refused request may reveal. Every refusal is a 4xx with a message that says what to fix, and
nothing is stored.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from nacl.signing import SigningKey
from werkzeug.serving import BaseWSGIServer, make_server

from hydra_tasks import keys
from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.grid.site import signed_report
from hydra_tasks.ledger import book as ledger
from hydra_tasks.ledger.rewards import Reward
from hydra_tasks.models import WorkerState
from hydra_tasks.settings import Settings
from hydra_tasks.trust import identity
from hydra_tasks.worker.registry import WorkerInfo, get_worker, register
from hydra_webapp import MAX_REQUEST_BYTES, create_app

pytestmark = pytest.mark.integration

TOKEN = "hostile-input-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
PI_JOB = '{"kind": "pi", "params": {"samples": 1000, "seed": 1}}'

# Every endpoint that takes ?limit=, with its documented bounds.
LIMIT_ENDPOINTS = [
    ("/api/jobs", 1, 500),
    ("/api/adaptive_chunking_metrics", 1, 50),
    ("/api/sustainability_metrics", 1, 50),
    ("/api/adaptive_tiling_metrics", 1, 50),
    ("/api/leaderboard", 1, 100),
]


# --- a real server -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app(redis_only: HydraCelery) -> Iterator[Flask]:
    flask_app = create_app(redis_only.settings.with_(api_token=TOKEN))
    yield flask_app
    flask_app.extensions["hydra"].close()


@pytest.fixture(scope="module")
def server(app: Flask) -> Iterator[BaseWSGIServer]:
    """The app on a free port of 127.0.0.1, served by Werkzeug's threaded server (as ``flask run``)."""
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, name="webapp-under-test", daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        thread.join(timeout=10)


def call(server: BaseWSGIServer, method: str, path: str, body: bytes | None = None, *,
         headers: dict[str, str] | None = None, chunked: bool = False) -> tuple[int, dict[str, Any]]:
    """One request over a fresh TCP connection; (status, JSON body). ``chunked`` sends the body with
    ``Transfer-Encoding: chunked`` (4 KiB chunks, no Content-Length)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
    try:
        if chunked and body is not None:
            pieces = [body[i:i + 4096] for i in range(0, len(body), 4096)]
            conn.request(method, path, body=iter(pieces), encode_chunked=True,
                         headers={**(headers or {}), "Transfer-Encoding": "chunked"})
        else:
            conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        payload = response.read()
        expected = "application/problem+json" if response.status >= 400 else "application/json"  # webapp/errors.py
        assert response.getheader("Content-Type", "").startswith(expected), (response.status, payload[:200])
        return response.status, json.loads(payload)
    finally:
        conn.close()


def stored_jobs(app: Flask) -> int:
    return int(app.extensions["hydra"].redis.zcard(keys.JOBS))


def padded(json_text: str, size: int) -> bytes:
    """A JSON document of exactly ``size`` bytes: ``json_text`` followed by spaces (still valid JSON,
    and so is every prefix that keeps the whole of ``json_text``)."""
    body = json_text.encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


# --- body size -----------------------------------------------------------------------------------
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_body_over_64_kib_is_refused_with_413_and_creates_no_job(
        app: Flask, server: BaseWSGIServer, chunked: bool) -> None:
    before = stored_jobs(app)
    # A valid job followed by 70 KiB of spaces: its 64 KiB prefix is valid JSON too, so a server that
    # cut the body at the limit would accept the job.
    status, body = call(server, "POST", "/api/jobs", padded(PI_JOB, 70 * 1024), headers={**AUTH, **JSON},
                        chunked=chunked)
    assert status == 413, body
    assert "64 KiB" in body["error"] and "smaller" in body["error"]
    assert stored_jobs(app) == before


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_body_of_exactly_64_kib_is_accepted(app: Flask, server: BaseWSGIServer, chunked: bool) -> None:
    before = stored_jobs(app)
    status, body = call(server, "POST", "/api/jobs", padded(PI_JOB, MAX_REQUEST_BYTES), headers={**AUTH, **JSON},
                        chunked=chunked)
    assert status == 201, body
    assert stored_jobs(app) == before + 1


def test_a_chunked_body_far_over_the_limit_is_refused_too(app: Flask, server: BaseWSGIServer) -> None:
    before = stored_jobs(app)
    status, body = call(server, "POST", "/api/jobs", padded(PI_JOB, 3 * 1024 * 1024), headers={**AUTH, **JSON},
                        chunked=True)
    assert status == 413, body
    assert stored_jobs(app) == before


# --- duplicate keys and non-finite numbers --------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ('{"kind": "pi", "kind": "mandelbrot", "params": {"width": 64, "height": 48}}', "kind"),
        ('{"kind": "pi", "kind": "pi", "params": {"samples": 1000}}', "kind"),
        ('{"kind": "pi", "params": {"samples": 1000, "samples": 2000}}', "samples"),
        ('{"kind": "pi", "params": {"seed": 1, "samples": 1e12, "seed": 2, "samples": 1000}}', "seed"),
    ],
    ids=["top-level", "top-level-same-value", "nested", "nested-twice"],
)
def test_a_job_with_a_duplicate_json_key_is_refused_with_400_naming_the_key(
        app: Flask, server: BaseWSGIServer, raw: str, key: str) -> None:
    before = stored_jobs(app)
    status, body = call(server, "POST", "/api/jobs", raw.encode(), headers={**AUTH, **JSON})
    assert status == 400, body
    assert f"duplicate key '{key}' in the JSON body" in body["error"]
    assert stored_jobs(app) == before


def test_a_signed_transfer_with_a_duplicate_key_is_refused_and_moves_nothing(
        redis_only: HydraCelery, server: BaseWSGIServer) -> None:
    client = redis_only.redis
    alice, bob = _account(redis_only), _account(redis_only)
    ledger.mint(client, identity.public_hex(alice), Reward(5_000_000, 5_000_000, 0, 0, 0, 5_000_000, False),
                job_id="hostile", chunk_id="alice", reason="test grant")
    signed = ledger.signed_transfer(alice, identity.public_hex(bob), 1_000_000, nonce=1)
    # Properly signed, with a second "amount" in front: read last-wins, the transfer is valid.
    raw = '{"amount": 4000000, ' + json.dumps(signed)[1:]
    status, body = call(server, "POST", "/api/transfer_tokens", raw.encode(), headers=JSON)
    assert status == 400, body
    assert "duplicate key 'amount' in the JSON body" in body["error"]
    assert ledger.balance(client, identity.public_hex(alice))["balance_micro"] == 5_000_000
    assert ledger.balance(client, identity.public_hex(bob))["balance_micro"] == 0
    status, body = call(server, "POST", "/api/transfer_tokens", json.dumps(signed).encode(), headers=JSON)
    assert status == 201, body  # the same transfer without the duplicate goes through


def test_a_signed_grid_report_with_a_duplicate_key_is_refused_and_changes_nothing(
        redis_only: HydraCelery, server: BaseWSGIServer, tmp_path: Path) -> None:
    key = identity.load_or_create(tmp_path / "worker.key")
    now = time.time()
    register(redis_only.redis, WorkerInfo(worker_id="dup@h", region="eu-west", host="h", pid=1, cores=2,
                                          concurrency=1, pi_samples_per_s=1e9, mandelbrot_iters_per_s=1e9,
                                          state=WorkerState.ONLINE, started_at=now, last_seen=now,
                                          public_key=identity.public_hex(key)))
    report = signed_report(key, "dup@h", "FR", 0.5)
    raw = '{"zone": "DE", ' + json.dumps(report)[1:]
    status, body = call(server, "POST", "/api/update_grid_info", raw.encode(), headers=JSON)
    assert status == 400, body
    assert "duplicate key 'zone' in the JSON body" in body["error"]
    worker = get_worker(redis_only.redis, "dup@h")
    assert worker is not None and not worker.grid_zone


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 5000], ids=lambda v: v[:12])
def test_a_non_finite_or_absurdly_long_number_in_the_body_is_refused_with_400(
        app: Flask, server: BaseWSGIServer, number: str) -> None:
    before = stored_jobs(app)
    raw = '{"kind": "pi", "params": {"samples": %s}}' % number
    status, body = call(server, "POST", "/api/jobs", raw.encode(), headers={**AUTH, **JSON})
    assert status == 400, body
    assert "not valid JSON" in body["error"] and ("finite" in body["error"] or "too long" in body["error"])
    assert "sys." not in body["error"]  # no advice meant for the server's programmer
    assert stored_jobs(app) == before


@pytest.mark.parametrize(
    "encoded",
    [b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n", b"-5\r\n{}\r\n0\r\n\r\n"],
    ids=["bad-size", "no-newline-after-chunk", "negative-size"],
)
def test_a_malformed_chunked_body_is_a_400_not_a_500(app: Flask, server: BaseWSGIServer, encoded: bytes) -> None:
    before = stored_jobs(app)
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as sock:
        sock.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + TOKEN.encode()
                     + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + encoded)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = json.loads(response.read())
    assert response.status == 400, body
    assert "could not be read" in body["error"] and "chunked" in body["error"]
    assert stored_jobs(app) == before


def test_a_body_that_is_not_utf8_is_refused_with_400(app: Flask, server: BaseWSGIServer) -> None:
    status, body = call(server, "POST", "/api/jobs", b'{"kind": "\xff\xfe"}', headers={**AUTH, **JSON})
    assert status == 400 and "not valid JSON" in body["error"], body


# --- integer query parameters ---------------------------------------------------------------------
BAD_LIMITS = [" 5", "5 ", "+5", "\u0665", "\u00b2", "5.0", "-1", "", "0x5", "1e1", "0", "9" * 5000]


@pytest.mark.parametrize(("path", "low", "high"), LIMIT_ENDPOINTS, ids=[e[0] for e in LIMIT_ENDPOINTS])
@pytest.mark.parametrize("bad", BAD_LIMITS, ids=lambda v: repr(v[:8]))
def test_every_limit_is_parsed_the_same_way_and_a_bad_one_is_a_400_naming_the_bounds_and_the_value(
        server: BaseWSGIServer, path: str, low: int, high: int, bad: str) -> None:
    status, body = call(server, "GET", f"{path}?limit={urllib.parse.quote(bad)}")
    assert status == 400, body
    message = body["error"]
    assert f"'limit' must be a whole number from {low} to {high}" in message
    assert "digits 0-9" in message
    assert repr(bad[:20]) in message


@pytest.mark.parametrize(("path", "low", "high"), LIMIT_ENDPOINTS, ids=[e[0] for e in LIMIT_ENDPOINTS])
def test_a_limit_just_outside_the_bounds_is_a_400_and_the_bounds_themselves_are_accepted(
        server: BaseWSGIServer, path: str, low: int, high: int) -> None:
    assert call(server, "GET", f"{path}?limit={high + 1}")[0] == 400
    assert call(server, "GET", f"{path}?limit={low - 1}")[0] == 400
    for good in (str(low), str(high), f"0{low}", None):
        status, body = call(server, "GET", path if good is None else f"{path}?limit={good}")
        assert status == 200, (good, body)


@pytest.mark.parametrize(("path", "low", "high"), LIMIT_ENDPOINTS, ids=[e[0] for e in LIMIT_ENDPOINTS])
def test_a_limit_given_twice_is_a_400(server: BaseWSGIServer, path: str, low: int, high: int) -> None:
    status, body = call(server, "GET", f"{path}?limit=5&limit=6")
    assert status == 400 and "'limit' given 2 times" in body["error"], body


# --- what a refusal reveals -----------------------------------------------------------------------
def test_a_refused_token_says_where_the_token_is_without_revealing_a_path(
        redis_only: HydraCelery, tmp_path: Path) -> None:
    data_dir = tmp_path / "secret-place"
    app = create_app(Settings().with_(redis_url=redis_only.settings.redis_url, data_dir=data_dir, api_token=None))
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            status, body = call(srv, "POST", "/api/jobs", PI_JOB.encode(), headers={**headers, **JSON})
            assert status == 401
            message = body["error"]
            assert "Authorization: Bearer" in message and "api_token file" in message
            assert "secret-place" not in message and str(tmp_path) not in message
    finally:
        srv.shutdown()
        thread.join(timeout=10)
        app.extensions["hydra"].close()


def _account(app: HydraCelery) -> SigningKey:
    key = SigningKey.generate()
    ledger.open_account(app.redis, identity.public_hex(key))
    return key
