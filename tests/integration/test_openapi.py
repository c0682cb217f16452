"""The API's contract (webapp/openapi.py): the OpenAPI 3.1 document at /api/openapi.json covers every
route, request bodies are validated against its schemas, every error is application/problem+json,
and a live stack (real Redis, real Celery workers, the webapp on a real HTTP server) keeps to the
document under Schemathesis: no server error, no response that breaks the schema.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from werkzeug.serving import make_server

from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.settings import RATE_LIMIT_OFF
from hydra_webapp import create_app
from hydra_webapp.auth import OPERATOR_ONLY
from hydra_webapp.openapi import documented_rules, operations, schema_violation, undocumented, validator
from support import running_stack, wait_for_job

pytestmark = pytest.mark.integration

TOKEN = "openapi-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def app(redis_only: HydraCelery) -> Iterator[Flask]:
    flask_app = create_app(redis_only.settings.with_(api_token=TOKEN))
    yield flask_app
    flask_app.extensions["hydra"].close()


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# --- the document -------------------------------------------------------------------------------
def test_the_document_is_valid_openapi_3_1(client: FlaskClient) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    doc = response.get_json()
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises with the offending part if it is not


def test_every_api_route_is_documented(app: Flask) -> None:
    missing = [(path, method, endpoint) for path, method, endpoint in documented_rules(app)
               if endpoint not in operations()]
    skeletons = "\n".join(
        f'    "{endpoint}": Operation("<what {method.upper()} {path} does>", "{endpoint.partition(".")[0]}", '
        f'{{200: json_reply("<what it answers>", "<a schema in webapp/api_schemas.py>")}}'
        + "".join(', path={"job_id": JOB_ID_PARAM}' if name == "job_id" else
                  f', path={{"{name}": Param({{"type": "string"}}, "<what it is>", True)}}'
                  for name in re.findall(r"{(\w+)}", path))
        + (', body="<its schema>", explain=<the domain parser>' if method in ("post", "put", "patch") else "")
        + "),"
        for path, method, endpoint in missing)
    assert not missing, (
        f"{len(missing)} route(s) are not in the API document (GET /api/openapi.json). Add to the table in "
        f"webapp/openapi.py's operations():\n{skeletons}\nwith errors=(...) for statuses it answers besides the "
        "derived ones (401/429/400/413/404/503), and read a JSON body with validated_body(). See ARCHITECTURE.md, "
        "\"The API contract\".")
    assert not undocumented(app)
    paths = {(path, method) for path, method, _ in documented_rules(app)}
    doc = app.test_client().get("/api/openapi.json").get_json()
    assert {(path, method) for path, item in doc["paths"].items() for method in item} == paths
    assert {"/api/jobs", "/api/jobs/{job_id}", "/healthz", "/metrics", "/api/openapi.json"} <= {p for p, _ in paths}
    stale = set(operations()) - {endpoint for _, _, endpoint in documented_rules(app)}
    assert not stale, f"operations() documents endpoints the app does not have: {sorted(stale)}"


def test_the_operator_token_is_declared_exactly_where_it_is_required(app: Flask, client: FlaskClient) -> None:
    doc = client.get("/api/openapi.json").get_json()
    for path, method, endpoint in documented_rules(app):
        operation = doc["paths"][path][method]
        guarded = getattr(app.view_functions[endpoint], OPERATOR_ONLY, False)
        assert (operation["security"] == [{"operatorToken": []}]) == guarded, (method, path)
        assert ("401" in operation["responses"]) >= guarded
    answer = client.post("/api/jobs/00/cancel")
    assert answer.status_code == 401 and answer.mimetype == PROBLEM
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_docs_page_lists_every_operation_and_loads_nothing_from_elsewhere(app: Flask,
                                                                              client: FlaskClient) -> None:
    page = client.get("/api/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for path, method, _ in documented_rules(app):
        assert f"{method.upper()} {path}" in html
    assert "schema-JobSpec" in html and "application/problem+json" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # no CDN, no other host
    assert "<script>" not in html and " style=" not in html  # the strict CSP allows neither
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


# --- validation from the same schemas -------------------------------------------------------------
def test_a_body_that_breaks_the_schema_is_a_400_problem_naming_the_field(client: FlaskClient) -> None:
    answer = client.post("/api/jobs", json={"kind": "pi", "params": {"samples": "lots"}}, headers=AUTH)
    assert answer.status_code == 400 and answer.mimetype == PROBLEM
    body = answer.get_json()
    assert body["type"] == "about:blank" and body["title"] == "Bad Request" and body["status"] == 400
    assert "'samples' must be an integer" in body["detail"] and body["error"] == body["detail"]  # the domain's words
    assert body["errors"][0]["field"] == "params.samples"
    assert "whole number from 1 to" in body["errors"][0]["message"]  # what to send, from the schema

    answer = client.post("/api/transfer_tokens", json={"from": "a", "to": "b", "amount": 1, "nonce": 1})
    assert answer.status_code == 400 and answer.mimetype == PROBLEM
    assert {"field": "signature"} in [{"field": e["field"]} for e in answer.get_json()["errors"]]


def test_a_schema_violation_alone_names_the_field_and_what_to_send() -> None:
    # The domain validators refuse every body the schemas refuse (their words win); the schema's own
    # message, for a body that only the schema refuses, is built here.
    body = {"kind": "mandelbrot", "params": {"width": 10, "colouring": "neon"}, "priority": 12, "memo": "x"}
    refusal = schema_violation(sorted(validator("JobSpec").iter_errors(body), key=lambda e: list(e.path)), "JobSpec")
    by_field = {e["field"]: e["message"] for e in refusal.errors}
    assert by_field["params.colouring"] == ("'params.colouring'='neon' is not one of smooth, bands; "
                                            "send one of smooth, bands.")
    assert by_field["priority"].startswith("'priority'=12 is above the maximum, 9")
    assert "send a whole number from 0 (lowest) to 9" in by_field["priority"]
    assert by_field["(body)"].startswith("Unknown field(s) in the body: memo; allowed: confidential, deadline")
    assert refusal.code == 400 and "JobSpec schema" in str(refusal.description)
    mixed = {"kind": "mandelbrot", "params": {"xmin": 0, "span": 1}}
    refusal = schema_violation(list(validator("JobSpec").iter_errors(mixed)), "JobSpec")
    assert [e["message"].partition(";")[0] for e in refusal.errors] == [
        "'params.span'=1 is not allowed here", "'params' has 'xmin' but not 'xmax', 'ymax', 'ymin'"]
    missing = schema_violation(list(validator("Transfer").iter_errors({})), "Transfer")
    assert missing.errors[0]["message"].startswith("Missing required field '")


def test_a_non_string_region_is_a_400_not_a_server_error(redis_only: HydraCelery) -> None:
    # Found by Schemathesis: check_regions hashed each region, so [{}] was a 500.
    web = create_app(redis_only.settings.with_(api_token=TOKEN, self_enrolment=True))
    try:
        body = {"action": "enrol_volunteer", "name": "x", "public_key": "0" * 64, "regions": [{}], "signature": "",
                "timestamp": 0.0}
        answer = web.test_client().post("/api/volunteers", json=body)
        assert answer.status_code == 400 and answer.mimetype == PROBLEM
        assert "Regions" in answer.get_json()["detail"] and answer.get_json()["errors"][0]["field"] == "regions.0"
    finally:
        web.extensions["hydra"].close()


def test_a_valid_body_still_meets_the_domain_validator(client: FlaskClient) -> None:
    # Within the schema, beyond what JSON Schema can say: the domain's limit on pixels.
    answer = client.post("/api/jobs", json={"kind": "mandelbrot", "params": {"width": 16_000, "height": 16_000}},
                         headers=AUTH)
    assert answer.status_code == 400 and "exceeds the limit" in answer.get_json()["detail"]
    assert "errors" not in answer.get_json()


def test_every_documented_integer_bound_is_the_one_the_endpoint_enforces(app: Flask, client: FlaskClient) -> None:
    doc = client.get("/api/openapi.json").get_json()
    checked = 0
    for path, item in doc["paths"].items():
        for param in item.get("get", {}).get("parameters", []):
            schema = param["schema"]
            if param["in"] != "query" or schema.get("type") != "integer" or "{" in path:
                continue
            for value, status in ((schema["maximum"], 200), (schema["maximum"] + 1, 400), (schema["minimum"], 200),
                                  (schema["minimum"] - 1, 400)):
                answer = client.get(f"{path}?{param['name']}={value}")
                assert answer.status_code == status, (path, param["name"], value, answer.get_json())
            checked += 1
    # /api/jobs, /api/leaderboard and the three metrics endpoints take ?limit=; /api/history ?minutes= and ?days=
    assert checked == 7


# --- one error format -------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/api/no-such-thing", 404), ("DELETE", "/api/jobs", 405), ("POST", "/healthz", 405),
    ("POST", "/metrics", 405), ("GET", "/api/jobs/not-hex", 404), ("GET", "/api/jobs?limit=0", 400),
    ("POST", "/api/jobs", 401),
])
def test_every_api_error_is_problem_json(client: FlaskClient, method: str, path: str, status: int) -> None:
    answer = client.open(path, method=method)
    assert answer.status_code == status and answer.mimetype == PROBLEM
    body = answer.get_json()
    assert body["status"] == status and body["detail"] and body["error"] == body["detail"] and body["title"]
    if status == 405:
        assert "GET" in answer.headers["Allow"] and "use GET" in body["detail"]
    if path == "/api/no-such-thing":
        assert "GET /api/openapi.json" in body["detail"]
    if path == "/api/jobs/not-hex":  # a view's own 404 keeps its words
        assert "job ids are 1-64 lowercase hex digits" in body["detail"]


def test_a_body_over_the_limit_is_a_413_problem(client: FlaskClient) -> None:
    answer = client.post("/api/jobs", data=b"{" + b" " * 70_000 + b"}", content_type="application/json",
                         headers=AUTH)
    assert answer.status_code == 413 and answer.mimetype == PROBLEM and "64 KiB" in answer.get_json()["detail"]


def test_html_pages_keep_the_html_error_page(client: FlaskClient) -> None:
    answer = client.get("/jobs/not-hex")
    assert answer.status_code == 404 and answer.mimetype == "text/html"


# --- Schemathesis against a live stack ----------------------------------------------------------------
@dataclass(frozen=True)
class Live:
    url: str
    job_ids: list[str]  # finished jobs, so /api/jobs/{job_id}/... also answers 200, not only 404
    worker_id: str  # a real worker and its account, for /api/workers/{worker_id}, /api/worker_balance/{who} ...
    account: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Redis, a control worker and one region worker (real processes), and the webapp on 127.0.0.1
    served by Werkzeug's threaded server; rate limits off so the run goes past the first 429; two small
    jobs run to the end first, so there is something to read. Self-enrolment is on so that its requests
    get past the 403 to the schema and the signature check (none is signed, so no volunteer is added)."""
    limits_off = {name: RATE_LIMIT_OFF for name in ("rate_limit_transfers", "rate_limit_grid_reports",
                                                    "rate_limit_enrolment", "rate_limit_profiles",
                                                    "rate_limit_reads")}
    with running_stack(tmp_path_factory.mktemp("openapi"), {"eu": 1}, self_enrolment=True,
                       self_enrolment_per_hour=100_000, **limits_off) as stack:
        web = create_app(stack.child_settings().with_(api_token=TOKEN))
        server = make_server("127.0.0.1", 0, web, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="webapp-under-schemathesis", daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_port}"
            job_ids = [requests.post(f"{url}/api/jobs", json=spec, headers=AUTH, timeout=30).json()["id"]
                       for spec in ({"kind": "pi", "params": {"samples": 2_000_000, "seed": 1}},
                                    {"kind": "mandelbrot", "params": {"width": 64, "height": 48, "max_iter": 64}})]
            celery_app: HydraCelery = web.extensions["hydra"]
            for job_id in job_ids:
                assert wait_for_job(celery_app, job_id, timeout_s=60).state == "done"
            worker = requests.get(f"{url}/api/workers", timeout=30).json()["workers"][0]
            yield Live(url, job_ids, worker["worker_id"], worker["public_key"])
        finally:
            server.shutdown()
            thread.join(timeout=10)
            web.extensions["hydra"].close()


# Every check but positive_data_acceptance (a schema cannot say that a transfer's signature must verify,
# 'from' differ from 'to' or an image hold at most 50 Mpx, so the domain refuses some bodies the schema
# allows) and ensure_resource_availability (below).
CHECKS = ",".join((
    "not_a_server_error",  # no 5xx
    "status_code_conformance", "content_type_conformance", "response_headers_conformance",
    "response_schema_conformance",  # every answer as documented
    "negative_data_rejection",  # every request that breaks the schema is refused with a 4xx
    "ignored_auth",  # the operations that declare the bearer token refuse requests without it
    "unsupported_method", "allow_header_conformance", "missing_required_header",
    "use_after_free",  # stateful: a deleted job is gone
    # (Not ensure_resource_availability: it infers a link from POST /api/jobs to .../image.png too, and
    # only a Mandelbrot job has an image.)
))


def test_the_live_api_keeps_to_its_document(live: Live, tmp_path: Path) -> None:
    """Schemathesis (its CLI, as a user runs it) on every operation of the live document, with the
    operator token so guarded operations go past 401, and the ids of real jobs and a real worker half
    the time: the schemas' examples, then boundary and negative cases (coverage), then generated ones
    (fuzzing), then sequences that follow the document's links from POST /api/jobs (stateful),
    derandomized. No 5xx; every answer's status, content type, headers and body as the document says;
    every request that breaks the schema refused."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(f"""
[dictionaries.jobs]
values = {json.dumps(live.job_ids)}

[dictionaries.owners]
values = {json.dumps([live.worker_id, live.account])}

[dictionaries.workers]
values = {json.dumps([live.worker_id])}

[dictionaries.accounts]
values = {json.dumps([live.account])}

[parameters]
"path.job_id" = {{ dictionary = "jobs", probability = 0.5 }}
"path.who" = {{ dictionary = "owners", probability = 0.5 }}
"path.worker_id" = {{ dictionary = "workers", probability = 0.5 }}
"path.account" = {{ dictionary = "accounts", probability = 0.5 }}
""")
    # A stream (Server-Sent Events) never ends, so it cannot be fuzzed request by request: left out here.
    doc = requests.get(f"{live.url}/api/openapi.json", timeout=30).json()
    streams = [op["operationId"] for item in doc["paths"].values() for op in item.values()
               if "text/event-stream" in op["responses"].get("200", {}).get("content", {})]
    report = tmp_path / "report.ndjson"
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
               f"{live.url}/api/openapi.json", "--checks", CHECKS, "--header", f"Authorization: Bearer {TOKEN}",
               "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", "20", "--generation-deterministic",
               # One worker: with two, Python 3.11 once failed inside Schemathesis itself ("SystemError: AST
               # constructor recursion depth mismatch": CPython 3.11 counts AST recursion per interpreter, not per thread).
               "--workers", "1", "--request-timeout", "30", "--no-color", "--report", "ndjson",
               "--report-ndjson-path", str(report),
               *[arg for op_id in streams for arg in ("--exclude-operation-id", op_id)]]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, f"Schemathesis found problems:\n{run.stdout[-20_000:]}\n{run.stderr[-3000:]}"
    # Every operation was tested, except streams and the one that serves the document (Schemathesis leaves it out).
    tested = set(re.findall(r'"label": ?"([A-Z]+ /[^"]*)"', report.read_text()))
    expected = {f"{method.upper()} {path}" for path, item in doc["paths"].items() for method, op in item.items()
                if op["operationId"] not in streams} - {"GET /api/openapi.json"}
    assert tested == expected, (sorted(expected - tested), sorted(tested - expected))
