"""The HTTP API's contract: an OpenAPI 3.1 document built from the app's routes and :func:`operations`,
served at ``GET /api/openapi.json`` (and readable at ``GET /api/docs``), and request-body validation
against the same schemas (:func:`validated_body`).

Paths and methods come from Flask's URL map, so the document always lists the routes that exist;
what each operation takes and answers comes from :func:`operations`, keyed by Flask endpoint
name. Also derived, not written by hand: the bearer-token security and its 401 for every view
wrapped by ``auth.require_token``, 429 for every rate-limited endpoint (webapp/ratelimit.py), 400
and 413 for a body, 400 for query parameters, 404 for path parameters, 503 (Redis down) everywhere.
Every error is ``application/problem+json`` (schema ``Problem``, see webapp/errors.py).

Documenting a new endpoint is one entry in the table :func:`operations` returns, e.g. for
``@bp.post("/<job_id>/pause")`` ``def pause_job`` in webapp/jobs.py::

    "jobs.pause_job": Operation(
        "Pause a job", "jobs", {200: json_reply("The paused job", "Job")},
        path={"job_id": JOB_ID_PARAM}, errors=(409,)),

and a view that takes a JSON body reads it with ``validated_body()`` (instead of
``inputs.json_object_body()``) and names its schema (a ``components`` entry of webapp/api_schemas.py)
with ``body="..."``. tests/integration/test_openapi.py fails for any /api route without an entry.

Validation: the body is read strictly (webapp/inputs.py: size, duplicate keys, finite numbers), then
checked against the operation's schema. A body that breaks it never reaches the view: if the domain's
own validator (``explain``) refuses it too, its precise message (and status) is the answer, else a 400
that names the field and what to send, with every violation in ``errors``.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Mapping

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, relevance

from hydra_tasks.errors import HydraError
from hydra_tasks.grid.site import parse_report
from hydra_tasks.jobs.retention import PRUNE_PER_REQUEST
from hydra_tasks.jobs.spec import parse_job_spec
from hydra_tasks.ledger.book import parse_transfer
from hydra_tasks.ledger.profiles import parse_profile
from hydra_tasks.trust.volunteers import verify_enrolment

from . import api_schemas
from .api_schemas import COMPONENTS, JOB_ID, Schema, ref
from .auth import OPERATOR_ONLY, WHERE_THE_TOKEN_IS
from .context import hydra
from .inputs import BodyBreaksSchema, json_object_body

bp = Blueprint("openapi", __name__, url_prefix="/api")
log = logging.getLogger(__name__)

DOCUMENT_KEY = "hydra_openapi"
SCHEMA_ERRORS = "schema_errors"  # attribute of a domain error raised for a body that also breaks its schema
PROBLEM_JSON = "application/problem+json"
SECURITY_SCHEME = "operatorToken"
DOCUMENTED = re.compile(r"^(/api/.*|/healthz|/metrics)$")
_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")
_IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})

_ERROR_TEXT = {
    400: "The request is malformed or breaks its schema; 'detail' says what to send.",
    401: "The signature in the body does not verify, or is stale or replayed; sign a new request.",
    403: "Refused (e.g. self-enrolment is off).",
    404: "Not found.",
    409: "Conflicts with the current state (e.g. the job is already cancelled, a nonce was used).",
    413: "The body is larger than 64 KiB.",
    429: "Too many requests from this address; see Retry-After and 'retry_after_s'.",
    503: "Redis or the Celery broker is unavailable; try again.",
}


# --- the route table ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """A query or path parameter."""

    schema: Schema
    description: str
    required: bool = False


@dataclass(frozen=True)
class Reply:
    """A success response: its description, media type and schema (None for none)."""

    description: str
    media: str = "application/json"
    schema: Schema | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # header name -> description
    links: Mapping[str, str] = field(default_factory=dict)  # link name -> an endpoint taking {job_id} = this id


def json_reply(description: str, component: str, *, links: Mapping[str, str] | None = None, **headers: str) -> Reply:
    return Reply(description, schema=ref(component), headers=headers, links=links or {})


@dataclass(frozen=True)
class Operation:
    """What one endpoint takes and answers (paths and methods come from the URL map)."""

    summary: str
    tag: str
    replies: Mapping[int, Reply]
    description: str = ""
    body: str | None = None  # a components/schemas name (webapp/api_schemas.py); read it with validated_body()
    explain: Callable[[dict[str, Any]], object] | None = None  # the domain validator: its message wins
    query: Mapping[str, Param] = field(default_factory=dict)
    path: Mapping[str, Param] = field(default_factory=dict)
    errors: tuple[int, ...] = ()  # statuses besides the derived ones (see the module docstring)


def _limit(default: int, high: int) -> Param:
    return Param({"type": "integer", "minimum": 1, "maximum": high, "default": default},
                 f"how many to return, a whole number from 1 to {high} (ASCII digits)")


def _job_spec(body: dict[str, Any]) -> object:
    settings = hydra().settings
    return parse_job_spec(body, confidential_default=settings.confidential, attestation=settings.attestation)


# A new job's id feeds these operations (OpenAPI links: clients and Schemathesis's stateful phase follow them).
# (Not the image: only a Mandelbrot job has one.)
_JOB_LINKS = {"GetJob": "jobs.get_job", "CancelJob": "jobs.cancel_job", "ReopenJob": "jobs.reopen_job"}
JOB_ID_PARAM = Param({"type": "string", "pattern": JOB_ID}, "the job's id: 1-64 lowercase hex digits", True)
_SIGNED = ("Authenticated by the Ed25519 signature in the body (not by the operator token): 'signature' is the hex "
           "signature of the canonical JSON (sorted keys, separators ',' and ':', non-ASCII escaped; "
           "hydra_tasks.trust.identity.canonical) of the object named in the body schema's description.")


@functools.cache
def operations() -> dict[str, Operation]:
    """Every documented endpoint, by Flask endpoint name (built on first use: the blueprints' limits are
    imported from them, and they import this module)."""
    from hydra_tasks.worker.details import MAX_RECENT_CHUNKS, RECENT_CHUNKS, WORKER_ID_RE

    from . import history, jobs, metrics, tokens

    metrics_query = {
        "job": Param({"type": "string", "pattern": JOB_ID}, "only this job (1-64 lowercase hex digits)"),
        "limit": _limit(metrics.DEFAULT_LIMIT, metrics.MAX_LIMIT),
    }
    return {
        # jobs (webapp/jobs.py)
        "jobs.list_jobs": Operation("List jobs, newest first", "jobs", {200: json_reply("The jobs", "JobList")},
                                    query={"limit": _limit(jobs.DEFAULT_LIMIT, jobs.MAX_LIMIT)}),
        "jobs.create_job": Operation(
            "Submit a job", "jobs",
            {201: json_reply("The stored job (queued)", "Job", Location="the job's URL", links=_JOB_LINKS)},
            description="Validated, stored and dispatched; a job that breaks the domain's limits (e.g. too many "
                        "pixels) is refused with 400 before anything is stored.",
            body="JobSpec", explain=_job_spec),
        "jobs.get_job": Operation("Read a job", "jobs", {200: json_reply("The job", "Job")},
                                  path={"job_id": JOB_ID_PARAM}),
        "jobs.cancel_job": Operation("Cancel a job", "jobs", {200: json_reply("The cancelled job", "Job")},
                                     path={"job_id": JOB_ID_PARAM}, errors=(409,)),
        "jobs.reopen_job": Operation(
            "Re-open a done job", "jobs", {200: json_reply("The re-opened job", "Job")},
            description="Recomputes a done job's suspect results (from a worker caught cheating after they were "
                        "merged).",
            path={"job_id": JOB_ID_PARAM}, errors=(409,)),
        "jobs_bulk.prune_jobs": Operation(
            "Remove old finished jobs", "jobs", {200: json_reply("The jobs removed", "Pruned")},
            description="Done, failed and cancelled jobs that ended more than older_than_s seconds ago go, oldest "
                        f"first, at most {PRUNE_PER_REQUEST} per request ('more' says whether to send it again); the "
                        "token ledger keeps their mints. The sweep does the same after HYDRA_JOB_RETENTION_S.",
            body="PruneRequest"),
        "jobs.delete_job": Operation(
            "Delete a finished job", "jobs", {200: json_reply("The deleted job's id", "Deleted")},
            description="A done, failed or cancelled job and all its data; the token ledger keeps its mints.",
            path={"job_id": JOB_ID_PARAM}, errors=(409,)),
        "jobs.job_image": Operation(
            "A Mandelbrot job's image", "jobs",
            {200: Reply("The PNG: final (cacheable), or the image so far with X-Hydra-Partial: 1", "image/png",
                        {"type": "string", "contentMediaType": "image/png"},
                        {"X-Hydra-Partial": "1 while the job runs (the image so far)"})},
            path={"job_id": JOB_ID_PARAM}),
        # workers (webapp/workers.py)
        "workers.workers": Operation("List the workers", "workers", {200: json_reply("Every registered worker",
                                                                                      "WorkerList")}),
        "workers.worker": Operation(
            "One worker, with its audit status and recent chunks", "workers",
            {200: json_reply("The worker", "WorkerDetails")},
            path={"worker_id": Param({"type": "string", "pattern": WORKER_ID_RE.pattern.join("^$")},
                                     "the worker's id, e.g. eu-west-1@host", True)},
            query={"recent": Param({"type": "integer", "minimum": 1, "maximum": MAX_RECENT_CHUNKS,
                                    "default": RECENT_CHUNKS},
                                   f"how many recent chunks to list, a whole number from 1 to {MAX_RECENT_CHUNKS}")}),
        # profiles (webapp/profiles.py)
        "profiles.set_profile": Operation(
            "Set your display name and team (signed with your key)", "tokens",
            {200: json_reply("The stored profile", "Profile")}, description=_SIGNED,
            body="ProfileRequest", explain=lambda body: parse_profile(body), errors=(401, 404, 409)),
        "profiles.get_profile": Operation(
            "An account's display name and team", "tokens", {200: json_reply("The profile", "Profile")},
            path={"account": Param({"type": "string"}, "the account: 64 lowercase hex digits", True)}),
        # grid (webapp/grid.py)
        "grid.update_grid_info": Operation(
            "Report a worker's grid zone and on-site renewables", "workers",
            {200: json_reply("The stored report", "GridAccepted")}, description=_SIGNED,
            body="GridReport", explain=lambda body: parse_report(body), errors=(401,)),
        # tokens (webapp/tokens.py)
        "tokens.transfer_tokens": Operation(
            "Transfer tokens (signed by the sender)", "tokens",
            {201: json_reply("Applied", "TransferDone"),
             200: json_reply("The same signed transfer was applied before: its entry (safe to retry)", "TransferDone")},
            description=_SIGNED, body="Transfer", explain=lambda body: parse_transfer(body), errors=(401, 404, 409)),
        "tokens.worker_balance": Operation(
            "An account's balance", "tokens", {200: json_reply("The balance", "Balance")},
            path={"who": Param({"type": "string", "minLength": 1},
                               "an account (Ed25519 public key, 64 hex digits) or a registered worker's id", True)}),
        "tokens.leaderboard": Operation("Top accounts", "tokens", {200: json_reply("By balance and by earnings",
                                                                                   "Leaderboard")},
                                        query={"limit": _limit(tokens.DEFAULT_LEADERBOARD, tokens.MAX_LEADERBOARD)}),
        "tokens.token_metrics": Operation("Token supply and activity", "tokens",
                                          {200: json_reply("Totals", "TokenMetrics")}),
        "tokens.ledger_checkpoint": Operation(
            "The newest signed ledger checkpoint", "tokens", {200: json_reply("The checkpoint", "Checkpoint")},
            errors=(404,)),
        # metrics (webapp/metrics.py)
        "metrics.adaptive_chunking_metrics": Operation("Adaptive chunking metrics", "metrics",
                                                       {200: json_reply("Per worker and per π job",
                                                                     "ChunkingMetrics")},
                                                       query=metrics_query, errors=(404,)),
        "metrics.sustainability_metrics": Operation("Sustainability metrics", "metrics",
                                                    {200: json_reply("Overall and per job",
                                                                  "SustainabilityMetrics")},
                                                    query=metrics_query, errors=(404,)),
        "metrics.adaptive_tiling_metrics": Operation("Adaptive tiling metrics", "metrics",
                                                     {200: json_reply("Per worker and per Mandelbrot job",
                                                                   "TilingMetrics")},
                                                     query=metrics_query, errors=(404,)),
        "metrics.security_metrics": Operation("Dropped messages and forged results, by reason", "metrics",
                                              {200: json_reply("Counts", "SecurityMetrics")}),
        "prometheus.prometheus_metrics": Operation(
            "Prometheus scrape endpoint", "metrics",
            {200: Reply("Prometheus text format", "text/plain", {"type": "string"})}),
        # volunteers (webapp/volunteers.py)
        "volunteers.enrol": Operation(
            "Enrol yourself as a volunteer (signed with your key)", "volunteers",
            {201: json_reply("Your credentials, with your key bound", "Credentials")},
            description=_SIGNED + " Off unless HYDRA_SELF_ENROLMENT (403).", body="Enrolment",
            explain=lambda body: verify_enrolment(body), errors=(401, 403, 409)),
        # live updates and charts (webapp/events.py, webapp/history.py)
        "events.events": Operation(
            "The dashboard's live updates (Server-Sent Events)", "dashboard",
            {200: Reply("A text/event-stream of named events whose data is one JSON object: 'jobs' "
                        "({jobs: [Job]}), 'workers' ({workers: [Worker]}), 'tokens' ({leaderboard, token_metrics}), "
                        "'job' (a Job, or {id, gone: true}), sent on connect and when they change; 'bye' when the "
                        "stream's lifetime (5 min) ends; 'problem' ({error}) when Redis fails. 503 with Retry-After "
                        "when the process already serves its 8 streams: poll the JSON API instead.",
                        "text/event-stream", {"type": "string"})},
            query={"topics": Param({"type": "string", "pattern": "^[a-z, ]{1,80}$"},
                                   "comma-separated topics: jobs, workers, tokens, job (default jobs,workers,tokens, "
                                   "or job when 'job' is given)"),
                   "job": Param({"type": "string", "pattern": JOB_ID}, "the job whose 'job' events to send")},
            errors=(404,)),
        "history.get_history": Operation(
            "The charts' time series", "dashboard",
            {200: Reply("chunks_per_s [[t, per s]], worker_speed {worker: {kind: [[t, speed]]}}, carbon {region: "
                        "[[t, gCO2/kWh]]}, minted_per_day_micro [[day, micro-tokens]], deferred [{id, kind, state, "
                        "deadline_ts, carbon_threshold, progress, waiting, why}] (webapp/history.py)",
                        schema={"type": "object",
                                "required": ["now", "window_s", "step_s", "chunks_per_s", "worker_speed", "carbon",
                                             "minted_per_day_micro", "deferred"],
                                "properties": {"now": {"type": "number"}, "window_s": {"type": "integer"},
                                               "step_s": {"type": "integer"},
                                               "chunks_per_s": {"type": "array", "items": {"type": "array"}},
                                               "worker_speed": {"type": "object"}, "carbon": {"type": "object"},
                                               "minted_per_day_micro": {"type": "array",
                                                                        "items": {"type": "array"}},
                                               "deferred": {"type": "array", "items": {"type": "object"}}}})},
            query={"minutes": Param({"type": "integer", "minimum": 1, "maximum": history.MAX_MINUTES,
                                     "default": history.DEFAULT_MINUTES},
                                    f"the window of the series, in minutes (1 to {history.MAX_MINUTES})"),
                   "days": Param({"type": "integer", "minimum": 1, "maximum": history.MAX_DAYS,
                                  "default": history.DEFAULT_DAYS},
                                 f"days of tokens minted (1 to {history.MAX_DAYS})")}),
        # health (webapp/health.py)
        "health.healthz": Operation("Health check", "health", {200: json_reply("The webapp answers", "Health")}),
        # this module
        "openapi.openapi_document": Operation("This document (OpenAPI 3.1)", "api",
                                              {200: Reply("The document", schema={"type": "object"})}),
        "openapi.api_docs": Operation("This document as a page", "api",
                                      {200: Reply("HTML", "text/html", {"type": "string"})}),
    }


# --- the document ---------------------------------------------------------------------------------
def documented_rules(app: Flask) -> list[tuple[str, str, str]]:
    """(OpenAPI path, method, endpoint) of every route the document must cover: /api/, /healthz, /metrics."""
    found = []
    for rule in app.url_map.iter_rules():
        if DOCUMENTED.match(rule.rule) and rule.endpoint.rpartition(".")[2] != "static":
            for method in sorted((rule.methods or set()) - _IGNORED_METHODS):
                found.append((_ARGUMENT.sub(r"{\1}", rule.rule), method.lower(), rule.endpoint))
    return sorted(found)


def undocumented(app: Flask) -> list[str]:
    """``METHOD /path (endpoint)`` for every route without an entry in :func:`operations`."""
    return [f"{method.upper()} {path} ({endpoint})" for path, method, endpoint in documented_rules(app)
            if endpoint not in operations()]


def document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``'s API (built once per app)."""
    cached = app.extensions.get(DOCUMENT_KEY)
    if cached is None:
        cached = app.extensions[DOCUMENT_KEY] = _build(app)
    return cached


def _build(app: Flask) -> dict[str, Any]:
    from .ratelimit import WRITE_LIMITS, read_endpoints

    limited = {limit.endpoint for limit in WRITE_LIMITS} | set(read_endpoints(app))
    paths: dict[str, dict[str, Any]] = {}
    for path, method, endpoint in documented_rules(app):
        operation = operations().get(endpoint)
        if operation is None:
            continue  # tests/integration/test_openapi.py says which entry to add
        guarded = bool(getattr(app.view_functions[endpoint], OPERATOR_ONLY, False))
        paths.setdefault(path, {})[method] = _operation(endpoint, operation, guarded=guarded,
                                                         limited=endpoint in limited)
    try:
        version = metadata.version("hydra-volunteer")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree without installing
        version = "0"
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {"title": "Hydra HTTP API", "version": version,
                 "description": "Jobs, workers, the token ledger, metrics and self-enrolment of a Hydra control "
                                "plane. Reads are open; changes need the operator token (bearer) or, for "
                                "transfers, grid reports and enrolment, the caller's Ed25519 signature in the body. "
                                "Every error is application/problem+json (RFC 9457).",
                 "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "servers": [{"url": "/"}],
        "tags": [{"name": name} for name in ("jobs", "workers", "tokens", "metrics", "dashboard", "volunteers",
                                             "health", "api")],
        "paths": paths,
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {SECURITY_SCHEME: {"type": "http", "scheme": "bearer",
                                                  "description": "The operator API token. " + WHERE_THE_TOKEN_IS}},
        },
    }


def _operation(endpoint: str, op: Operation, *, guarded: bool, limited: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": endpoint.replace(".", "_"), "summary": op.summary, "tags": [op.tag]}
    if op.description:
        out["description"] = op.description
    params = [_param(name, p, "path") for name, p in op.path.items()]
    params += [_param(name, p, "query") for name, p in op.query.items()]
    if params:
        out["parameters"] = params
    if op.body:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(op.body)}}}
    out["security"] = [{SECURITY_SCHEME: []}] if guarded else []
    responses: dict[str, Any] = {str(status): _reply(reply) for status, reply in sorted(op.replies.items())}
    errors = set(op.errors) | {503}
    errors |= {401} if guarded else set()
    errors |= {429} if limited else set()
    errors |= {400, 413} if op.body else set()
    errors |= {400} if op.query else set()
    errors |= {404} if op.path else set()
    for status in sorted(errors):
        text = "The operator token is missing or wrong." if status == 401 and guarded else _ERROR_TEXT[status]
        problem: dict[str, Any] = {"description": text,
                                   "content": {PROBLEM_JSON: {"schema": ref("Problem")}}}
        if status == 429:
            problem["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
        if status == 401 and guarded:
            problem["headers"] = {"WWW-Authenticate": {"description": 'Bearer realm="hydra"',
                                                       "schema": {"type": "string"}}}
        responses[str(status)] = problem
    out["responses"] = responses
    return out


def _param(name: str, param: Param, where: str) -> dict[str, Any]:
    return {"name": name, "in": where, "required": param.required or where == "path",
            "description": param.description, "schema": param.schema}


def _reply(reply: Reply) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    if reply.schema is not None:
        out["content"] = {reply.media: {"schema": reply.schema}}
    if reply.headers:
        out["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                          for name, text in reply.headers.items()}
    if reply.links:
        out["links"] = {name: {"operationId": endpoint.replace(".", "_"),
                               "parameters": {"job_id": "$response.body#/id"}}
                        for name, endpoint in reply.links.items()}
    return out


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return jsonify(document(current_app))


@bp.get("/docs")
def api_docs() -> str:
    return render_template("api_docs.html", doc=document(current_app), ref_name=_ref_name, pretty=_pretty)


def _ref_name(schema: Any) -> str | None:
    if isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
        return str(schema["$ref"]).rpartition("/")[2]
    return None


def _pretty(schema: Any) -> str:
    import json

    return json.dumps(schema, indent=2, ensure_ascii=False)


# --- validation -----------------------------------------------------------------------------------
@functools.cache
def validator(component: str) -> Draft202012Validator:
    """A validator for ``components/schemas/<component>`` (its $refs resolve inside the same components)."""
    return Draft202012Validator({"$ref": f"#/components/schemas/{component}", "components": {"schemas": COMPONENTS}})


def validated_body() -> dict[str, Any]:
    """The request body (read strictly by :func:`inputs.json_object_body`), valid against the schema its
    operation names in :func:`operations`; else the domain validator's error, or a 400 naming the field."""
    body = json_object_body()
    operation = operations().get(str(request.endpoint))
    if operation is None or operation.body is None:
        raise LookupError(f"{request.endpoint} reads a body with validated_body() but has no operations() entry "
                          "naming its schema (body=...) in webapp/openapi.py")
    violations = sorted(validator(operation.body).iter_errors(body), key=relevance)
    if violations:
        refusal = schema_violation(violations, operation.body)
        if operation.explain is not None:
            try:
                operation.explain(body)
            except HydraError as exc:  # the domain refuses it too: its precise message (and status) wins
                setattr(exc, SCHEMA_ERRORS, refusal.errors)  # webapp/errors.py adds them as 'errors'
                raise
            except Exception:  # a bug in the domain validator; the body is refused by the schema all the same
                log.exception("%s: the domain validator failed on a body that breaks the %s schema",
                              request.endpoint, operation.body)
        raise refusal
    return body


def schema_violation(violations: list[ValidationError], component: str) -> BodyBreaksSchema:
    """A 400 whose detail names the first field and what to send; ``errors`` has them all (at most 20)."""
    found = [{"field": _field(v), "message": describe(v)} for v in _leaves(violations)]
    errors = [dict(pair) for pair in dict.fromkeys(tuple(e.items()) for e in found)][:20]  # once each, in order
    more = f" ({len(errors) - 1} more problem(s) in 'errors')" if len(errors) > 1 else ""
    return BodyBreaksSchema(f"{errors[0]['message']}{more} The body must match the {component} schema "
                            "(GET /api/openapi.json).", errors)


def _leaves(violations: list[ValidationError]) -> list[ValidationError]:
    """The most specific errors: the best match inside each anyOf/oneOf/if-then."""
    found = []
    for violation in violations:
        while violation.context:
            violation = min(violation.context, key=relevance)
        found.append(violation)
    return sorted(found, key=relevance)


def _field(violation: ValidationError) -> str:
    path = [str(p) for p in violation.absolute_path]
    if violation.validator == "required" and isinstance(violation.instance, dict):
        path.append(next((str(r) for r in violation.validator_value if r not in violation.instance), "?"))
    return ".".join(path) or "(body)"


def describe(violation: ValidationError) -> str:
    """One violation as a sentence that names the field and says what to send."""
    name = _field(violation)
    schema = violation.schema if isinstance(violation.schema, dict) else {}
    value, kind, rule = violation.instance, violation.validator, violation.validator_value
    if kind == "required":
        wanted = schema.get("properties", {}).get(name.rpartition(".")[2], {}).get("description")
        return f"Missing required field '{name}'" + (f": send {wanted}." if wanted else ".")
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(str(k)[:40] for k in value if k not in allowed)
        where = "the body" if name == "(body)" else f"'{name}'"
        return f"Unknown field(s) in {where}: {', '.join(extra)}; allowed: {', '.join(allowed)}."
    if kind == "type":
        expected = " or ".join(rule) if isinstance(rule, list) else str(rule)
        said = f"'{name}' must be {_article(expected)}, got {_json_type(value)} {_shown(value)}"
    elif kind == "dependentRequired" and isinstance(value, dict):
        given = next((k for k, needs in rule.items() if k in value and any(n not in value for n in needs)), "?")
        missing = [n for n in rule.get(given, []) if n not in value]
        said = f"'{name}' has '{given}' but not {', '.join(repr(m) for m in missing)}"
    else:
        said = f"'{name}'={_shown(value)} {_REASONS.get(str(kind), lambda r: 'is not allowed')(rule)}"
    wanted = str(schema.get("description", "")).rstrip(".")
    return said + (f"; send {wanted}." if wanted else ".")


_REASONS: dict[str, Callable[[Any], str]] = {
    "minimum": lambda r: f"is below the minimum, {r}", "maximum": lambda r: f"is above the maximum, {r}",
    "exclusiveMinimum": lambda r: f"must be above {r}", "exclusiveMaximum": lambda r: f"must be below {r}",
    "pattern": lambda r: f"does not match {r}", "enum": lambda r: "is not one of " + ", ".join(map(str, r)),
    "const": lambda r: f"must be {r!r}", "minLength": lambda r: "is too short", "maxLength": lambda r: "is too long",
    "minItems": lambda r: "has too few items", "maxItems": lambda r: "has too many items",
    "not": lambda r: "is not allowed here",
}


def _article(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "integer", float: "number", dict: "object",
             type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else ("{…}" if isinstance(value, dict) else "[…]")
    return text if len(text) <= 60 else text[:60] + "…"


def _short(message: str) -> str:
    return message if len(message) <= 160 else message[:160] + "…"


__all__ = ["operations", "Operation", "Param", "Reply", "json_reply", "document", "undocumented", "validated_body",
           "bp", "api_schemas"]
