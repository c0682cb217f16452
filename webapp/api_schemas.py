"""The JSON Schemas (2020-12, as OpenAPI 3.1 uses) of the HTTP API's bodies and answers.

One source: :mod:`.openapi` puts these into ``GET /api/openapi.json`` under ``components/schemas``
AND validates every request body against them before the view runs. Bounds come from the domain's
own constants (``hydra_tasks``), so the document cannot drift from what the domain accepts; the
domain validators still run after the schema and keep their precise messages.

Every request property has a ``description`` saying what to send: a schema violation's message
quotes it. Response schemas name the members clients rely on; they allow more (a new member is
not a breaking change).
"""

from __future__ import annotations

from typing import Any

from hydra_tasks.grid.site import ACTION as GRID_ACTION
from hydra_tasks.grid.site import _ZONE_RE
from hydra_tasks.jobs.mandelbrot import COLOURINGS, COORD_LIMIT, MAX_ITER, MAX_SIDE
from hydra_tasks.compute import DEFAULT_GENERATOR, GENERATORS
from hydra_tasks.jobs.pi import MAX_SAMPLES
from hydra_tasks.jobs.spec import MAX_DEADLINE_AHEAD_S, MAX_DELAY_WEIGHT
from hydra_tasks.ledger.book import MAX_AMOUNT_MICRO, MAX_NONCE
from hydra_tasks.ledger.profiles import ACTION as PROFILE_ACTION
from hydra_tasks.ledger.profiles import MAX_NAME, MAX_TEAM
from hydra_tasks.models import JobKind, JobState
from hydra_tasks.trust.volunteers import ENROL_ACTION, NAME_RE, REGION_RE

Schema = dict[str, Any]

HEX_KEY = "^[0-9a-f]{64}$"
JOB_ID = "^[0-9a-f]{1,64}$"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


_NUMBER: Schema = {"type": "number"}
_INT: Schema = {"type": "integer"}
_STR: Schema = {"type": "string"}
# Only its type: its content is the domain's to check (identity.verify: 401 for a malformed or wrong one).
SIGNATURE: Schema = {"type": "string",
                     "description": "the Ed25519 signature: 128 lowercase hex digits (checked against the key; a "
                                    "malformed or wrong one is refused with 401)"}
_TOKENS: Schema = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{6}$", "description": "tokens, exact (6 decimals)"}

# --- requests -------------------------------------------------------------------------------------
PI_PARAMS: Schema = {
    "type": "object", "additionalProperties": False, "required": ["samples"],
    "properties": {
        "samples": {"type": "integer", "minimum": 1, "maximum": MAX_SAMPLES,
                    "description": f"the number of random points, a whole number from 1 to {MAX_SAMPLES}"},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**64 - 1,
                 "description": "the random seed, a whole number from 0 to 2^64-1 (random if absent)"},
        "generator": {"type": "string", "enum": list(GENERATORS), "default": DEFAULT_GENERATOR,
                      "description": "the counter-based generator of the samples: philox4x32-10 (the default) or "
                                     "splitmix64 (the generator of jobs from before there was a choice)"},
    },
}
_BOUNDS, _CENTRE = {"xmin", "xmax", "ymin", "ymax"}, ("center_x", "center_y", "span")
_COORD: Schema = {"type": "number", "minimum": -COORD_LIMIT, "maximum": COORD_LIMIT}
MANDELBROT_PARAMS: Schema = {
    "type": "object", "additionalProperties": False,
    "description": "either xmin/xmax/ymin/ymax (all four) or center_x/center_y/span, not both; "
                   "width x height is at most 50,000,000 pixels",
    "properties": {
        "width": {"type": "integer", "minimum": 1, "maximum": MAX_SIDE, "default": 800,
                  "description": f"the image width in pixels, from 1 to {MAX_SIDE}"},
        "height": {"type": "integer", "minimum": 1, "maximum": MAX_SIDE, "default": 600,
                   "description": f"the image height in pixels, from 1 to {MAX_SIDE}"},
        "max_iter": {"type": "integer", "minimum": 1, "maximum": MAX_ITER, "default": 256,
                     "description": f"the iteration limit per pixel, from 1 to {MAX_ITER}"},
        "colouring": {"enum": list(COLOURINGS), "default": "smooth",
                      "description": f"one of {', '.join(COLOURINGS)}"},
        **{k: {**_COORD, "description": f"a number from {-COORD_LIMIT} to {COORD_LIMIT}"}
           for k in ("xmin", "xmax", "ymin", "ymax", "center_x", "center_y")},
        "span": {"type": "number", "minimum": 1e-300, "maximum": 2 * COORD_LIMIT,
                 "description": f"the width of the view, a number above 0 and at most {2 * COORD_LIMIT}"},
    },
    # Bounds come all four together, and never with a centre.
    "dependentRequired": {k: sorted(_BOUNDS - {k}) for k in sorted(_BOUNDS)},
    "if": {"anyOf": [{"required": [k]} for k in sorted(_BOUNDS)]},
    "then": {"properties": {k: {"not": {}, "description": "either xmin/xmax/ymin/ymax or center_x/"
                                                           "center_y/span, not both"} for k in _CENTRE}},
}
JOB_SPEC: Schema = {
    "type": "object", "additionalProperties": False, "required": ["kind"],
    "description": "A job to run, e.g. {\"kind\": \"pi\", \"params\": {\"samples\": 100000000}}.",
    "examples": [{"kind": "pi", "params": {"samples": 1_000_000, "seed": 7}},
                 {"kind": "mandelbrot", "params": {"width": 64, "height": 48, "max_iter": 64}, "priority": 7}],
    "properties": {
        "kind": {"enum": [k.value for k in JobKind], "description": f"one of {', '.join(k.value for k in JobKind)}"},
        "params": {"type": "object", "description": "the kind's parameters (PiParams or MandelbrotParams)"},
        "priority": {"type": "integer", "minimum": 0, "maximum": 9, "default": 5,
                     "description": "a whole number from 0 (lowest) to 9"},
        "deadline": {"anyOf": [{"type": "number"}, {"type": "string", "maxLength": 100}],
                     "description": "unix seconds, ISO-8601 with a timezone, or a time from now such as +2h; "
                                    f"in the future and at most {MAX_DEADLINE_AHEAD_S // 86_400} days ahead"},
        "confidential": {"type": "boolean", "description": "true to run only on attested workers"},
        "delay_weight": {"type": "number", "minimum": 0, "maximum": MAX_DELAY_WEIGHT, "default": 0,
                         "description": "with a deadline: what an hour of waiting for cleaner power is worth, in "
                                        "gCO2/kWh (the job waits only for hours cleaner by more than that per hour "
                                        "waited); 0 waits as long as the deadline allows"},
    },
    "allOf": [
        {"if": {"properties": {"kind": {"const": "pi"}}, "required": ["kind"]},
         "then": {"properties": {"params": ref("PiParams")}, "required": ["params"]}},
        {"if": {"properties": {"kind": {"const": "mandelbrot"}}, "required": ["kind"]},
         "then": {"properties": {"params": ref("MandelbrotParams")}}},
    ],
}
TRANSFER: Schema = {
    "type": "object", "additionalProperties": False, "required": ["from", "to", "amount", "nonce", "signature"],
    "description": "Signed by the sender's Ed25519 key over the canonical JSON (sorted keys, no spaces) of "
                   "{\"action\": \"transfer\", \"from\", \"to\", \"amount\", \"nonce\"}; see "
                   "hydra_tasks.ledger.book.signed_transfer.",
    "properties": {
        "action": {"const": "transfer", "description": "\"transfer\" (optional; it is signed either way)"},
        "from": {"type": "string", "pattern": HEX_KEY, "description": "the sender's account: 64 lowercase hex digits"},
        "to": {"type": "string", "pattern": HEX_KEY, "description": "the recipient's account: 64 lowercase hex digits"},
        "amount": {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT_MICRO,
                   "description": f"micro-tokens (1 token = 1000000), a whole number from 1 to {MAX_AMOUNT_MICRO}"},
        "nonce": {"type": "integer", "minimum": 0, "maximum": MAX_NONCE,
                  "description": f"a whole number from 0 to {MAX_NONCE}, above the sender's last one"},
        "signature": SIGNATURE,
    },
}
GRID_REPORT: Schema = {
    "type": "object", "additionalProperties": False,
    "required": ["worker_id", "zone", "renewable_share", "timestamp", "signature"],
    "description": "Signed by the worker's registered Ed25519 key over the canonical JSON of "
                   f"{{\"action\": \"{GRID_ACTION}\", \"worker_id\", \"zone\", \"renewable_share\", \"timestamp\"}}; "
                   "see hydra_tasks.grid.site.",
    "properties": {
        "action": {"const": GRID_ACTION, "description": f"\"{GRID_ACTION}\" (optional)"},
        "worker_id": {"type": "string", "minLength": 1, "maxLength": 200, "description": "the worker's id"},
        "zone": {"type": "string", "pattern": _ZONE_RE.pattern,
                 "description": "an Electricity Maps zone code such as FR, DE or US-CAL-CISO"},
        "renewable_share": {"type": "number", "minimum": 0, "maximum": 1,
                            "description": "the share of power made on site, from 0 to 1"},
        "timestamp": {"type": "number", "description": "unix seconds when the report was signed (now)"},
        "signature": SIGNATURE,
    },
}
ENROLMENT: Schema = {
    "type": "object", "additionalProperties": False,
    "required": ["action", "name", "regions", "public_key", "timestamp", "signature"],
    "description": "Signed by the volunteer's own Ed25519 key over the canonical JSON of the other fields; see "
                   "hydra_tasks.trust.volunteers.signed_enrolment.",
    "properties": {
        "action": {"const": ENROL_ACTION, "description": f"\"{ENROL_ACTION}\""},
        "name": {"type": "string", "pattern": NAME_RE.pattern,
                 "description": "1-40 lowercase letters, digits and '-', e.g. alice-laptop"},
        "regions": {"type": "array", "minItems": 1,
                    "items": {"type": "string", "pattern": REGION_RE.pattern},
                    "description": "one or more region names of lowercase letters, digits and '-', e.g. [\"eu-west\"]"},
        "public_key": {"type": "string", "pattern": HEX_KEY,
                       "description": "your Ed25519 key: 64 lowercase hex digits"},
        "timestamp": {"type": "number", "description": "unix seconds when the request was signed (now)"},
        "signature": SIGNATURE,
    },
}

PROFILE_REQUEST: Schema = {
    "type": "object", "additionalProperties": False,
    "required": ["account", "display_name", "team", "nonce", "signature"],
    "description": "Signed by the account's Ed25519 key over the canonical JSON of "
                   f"{{\"action\": \"{PROFILE_ACTION}\", \"account\", \"display_name\", \"team\", \"nonce\"}}; "
                   "see hydra_tasks.ledger.profiles.signed_profile.",
    "properties": {
        "action": {"const": PROFILE_ACTION, "description": f"\"{PROFILE_ACTION}\" (optional; it is signed either way)"},
        "account": {"type": "string", "pattern": HEX_KEY, "description": "your account: 64 lowercase hex digits"},
        "display_name": {"type": "string", "description": f"at most {MAX_NAME} printable characters (\"\" for none)"},
        "team": {"type": "string", "description": f"at most {MAX_TEAM} printable characters (\"\" for none)"},
        "nonce": {"type": "integer", "minimum": 0, "maximum": MAX_NONCE,
                  "description": f"a whole number from 0 to {MAX_NONCE}, above your last profile's"},
        "signature": SIGNATURE,
    },
}

# --- answers --------------------------------------------------------------------------------------
PROBLEM: Schema = {
    "type": "object", "required": ["type", "title", "status", "detail"],
    "description": "RFC 9457 problem details; 'error' repeats 'detail' for older clients.",
    "properties": {
        "type": {"type": "string", "description": "about:blank: the status says what kind of problem it is"},
        "title": {"type": "string", "description": "the HTTP status phrase"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "what went wrong and what to send instead"},
        "error": {"type": "string", "description": "the same as detail"},
        "errors": {"type": "array", "description": "a body that breaks its schema: every violation",
                   "items": {"type": "object", "required": ["field", "message"],
                             "properties": {"field": _STR, "message": _STR}}},
        "retry_after_s": {"type": "integer", "minimum": 1, "description": "429: seconds to wait (as Retry-After)"},
        "limit": {"type": "string", "description": "429: the limit, e.g. '30 per minute'"},
    },
}
_COUNTER_NAMES = ("chunks_total", "chunks_done", "units_total", "units_done", "dispatched", "redispatched",
                  "duplicates", "rejections", "failures", "expiries", "declines", "backups", "hits", "iterations",
                  "recomputed", "suspect", "reopened")
JOB: Schema = {
    "type": "object", "required": ["id", "kind", "state", "priority", "params", "created_at", "progress"],
    "properties": {
        "id": {"type": "string", "pattern": JOB_ID},
        "kind": {"enum": [k.value for k in JobKind]},
        "state": {"enum": [s.value for s in JobState]},
        "priority": {"type": "integer", "minimum": 0, "maximum": 9},
        "params": {"type": "object"},
        "deadline_ts": _nullable(_NUMBER),
        "delay_weight": {"type": "number", "minimum": 0},
        "created_at": _NUMBER, "started_at": _nullable(_NUMBER), "finished_at": _nullable(_NUMBER),
        "updated_at": _NUMBER,
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "wall_s": _nullable(_NUMBER),
        **{name: {"type": "integer", "minimum": 0} for name in _COUNTER_NAMES},
        "result": _nullable({"type": "object"}),
        "error": _nullable(_STR),
        "sustainability": {"type": "object"},
        "carbon_threshold": _nullable(_NUMBER),
        "workers": {"type": "object", "additionalProperties": {"type": "object"}},
        "confidential": {"type": "boolean"},
        "waiting": _nullable(_STR),
    },
}
JOB_LIST: Schema = {"type": "object", "required": ["jobs"],
                    "properties": {"jobs": {"type": "array", "items": ref("Job")}}}
WORKER: Schema = {"type": "object", "required": ["worker_id", "state"],
                  "properties": {"worker_id": _STR, "state": _STR, "reputation": _NUMBER, "reliability": _NUMBER}}
WORKER_LIST: Schema = {"type": "object", "required": ["workers"],
                       "properties": {"workers": {"type": "array", "items": ref("Worker")}}}
TRANSFER_DONE: Schema = {
    "type": "object", "required": ["entry", "from", "to", "amount_micro", "amount", "nonce", "repeated"],
    "properties": {"entry": _STR, "from": {"type": "string", "pattern": HEX_KEY},
                   "to": {"type": "string", "pattern": HEX_KEY}, "amount_micro": _INT, "amount": _TOKENS,
                   "nonce": _INT, "repeated": {"type": "boolean", "description": "true: the same signed "
                                               "transfer was applied before; this is its entry"}},
}
BALANCE: Schema = {
    "type": "object", "required": ["account", "balance_micro", "balance", "earned_micro", "earned"],
    "properties": {"account": {"type": "string", "pattern": HEX_KEY}, "balance_micro": _INT, "balance": _TOKENS,
                   "earned_micro": _INT, "earned": _TOKENS},
}
_RANKED: Schema = {"type": "array", "items": {
    "type": "object", "required": ["rank", "account", "micro", "tokens"],
    "properties": {"rank": {"type": "integer", "minimum": 1}, "account": _STR, "micro": _INT, "tokens": _TOKENS}}}
LEADERBOARD: Schema = {
    "type": "object", "required": ["by_balance", "by_earned"],
    "properties": {"by_balance": _RANKED, "by_earned": _RANKED,
                   "by_team": {"type": "array", "items": {
                       "type": "object", "required": ["rank", "team", "members", "micro", "tokens"],
                       "properties": {"rank": {"type": "integer", "minimum": 1}, "team": _STR, "members": _INT,
                                      "micro": _INT, "tokens": _TOKENS}}}},
}
TOKEN_METRICS: Schema = {
    "type": "object", "required": ["supply_micro", "supply", "accounts", "holders", "minted_per_day_micro"],
    "properties": {"supply_micro": _INT, "supply": _TOKENS, "minted_micro": _INT, "transferred_micro": _INT,
                   "reversed_micro": _INT, "reversals": _INT, "mints": _INT, "transfers": _INT, "accounts": _INT,
                   "holders": _INT, "minted_per_day_micro": {"type": "object", "additionalProperties": _INT}},
}
CHECKPOINT: Schema = {"type": "object", "required": ["checkpoint", "count"],
                      "properties": {"checkpoint": {"type": "object"}, "count": {"type": "integer", "minimum": 1}}}
GRID_ACCEPTED: Schema = {
    "type": "object", "required": ["worker_id", "zone", "renewable_share", "reported_at", "valid_for_s"],
    "properties": {"worker_id": _STR, "zone": _STR, "renewable_share": _NUMBER, "reported_at": _NUMBER,
                   "valid_for_s": _NUMBER},
}
CREDENTIALS: Schema = {
    "type": "object", "required": ["hydra_credentials", "name", "worker_id", "regions", "redis_url"],
    "description": "What `hydra worker --credentials FILE` needs; keep it secret.",
    "properties": {"hydra_credentials": _INT, "name": _STR, "worker_id": _STR,
                   "regions": {"type": "array", "items": _STR}, "redis_url": _STR, "ca_pem": _nullable(_STR),
                   "join_secret": _nullable(_STR), "box_key": _nullable(_STR)},
}
_WORKER_MODEL: Schema = {
    "type": "object", "required": ["worker_id", "region", "state", "reliability"],
    "properties": {"worker_id": _STR, "region": _STR, "state": _STR, "cpu_limit": _nullable(_NUMBER),
                   "pi_samples_per_s": _NUMBER, "mandelbrot_iters_per_s": _NUMBER, "reliability": _NUMBER,
                   "chunks_ok": _INT, "chunks_failed": _INT, "leases_expired": _INT},
}
_JOB_SUMMARIES: Schema = {"type": "array", "description": "the newest jobs of the kind (or ?job=), newest first",
                          "items": {"type": "object"}}
CHUNKING_METRICS: Schema = {"type": "object", "required": ["workers", "jobs"],
                            "properties": {"workers": {"type": "array", "items": _WORKER_MODEL},
                                           "jobs": _JOB_SUMMARIES}}
TILING_METRICS: Schema = CHUNKING_METRICS
_CARBON: Schema = {"type": "object", "required": ["energy_kwh", "carbon_g", "counterfactual_g", "saved_g"],
                   "properties": {k: _NUMBER for k in ("energy_kwh", "carbon_g", "counterfactual_g", "saved_g",
                                                       "saved_fraction", "renewable_kwh")}}
SUSTAINABILITY_METRICS: Schema = {
    "type": "object", "required": ["overall", "jobs", "carbon_provider_failures"],
    "properties": {"overall": _CARBON,
                   "jobs": {"type": "array", "items": {"allOf": [_CARBON, {"required": ["job_id"],
                                                                           "properties": {"job_id": _STR}}]}},
                   "carbon_provider_failures": {"type": "array", "items": {"type": "object"}}},
}
_COUNTS: Schema = {"type": "object", "additionalProperties": _INT}
SECURITY_METRICS: Schema = {
    "type": "object",
    "required": ["intake_dropped", "intake_dropped_total", "results_dropped", "results_dropped_total", "spot_checks",
                 "audits_waiting", "reversed_micro", "reversals"],
    "properties": {"intake_dropped": _COUNTS, "intake_dropped_total": _INT, "results_dropped": _COUNTS,
                   "results_dropped_total": _INT, "spot_checks": {"type": "object"}, "audits_waiting": _INT,
                   "reversed_micro": _INT, "reversals": _INT},
}
PROFILE: Schema = {
    "type": "object", "required": ["account", "display_name", "team", "nonce", "updated_at"],
    "properties": {"account": {"type": "string", "pattern": HEX_KEY}, "display_name": _STR, "team": _STR,
                   "nonce": _INT, "updated_at": _NUMBER},
}
PRUNE_REQUEST: Schema = {
    "type": "object", "required": ["older_than_s"], "additionalProperties": False,
    "description": "Which finished jobs to remove: those that ended more than older_than_s seconds ago.",
    "properties": {
        "older_than_s": {"type": "number", "minimum": 0, "maximum": 1e10,
                         "description": "seconds since the job ended (done, failed or cancelled), e.g. 2592000 for 30 days"},
        "dry_run": {"type": "boolean", "default": False, "description": "only list the jobs that would be removed"},
    },
}
PRUNED: Schema = {
    "type": "object", "required": ["jobs", "removed", "more", "older_than_s"],
    "properties": {
        "jobs": {"type": "array", "items": {"type": "string", "pattern": JOB_ID},
                 "description": "the jobs removed (or, in a dry run, that would be), oldest first"},
        "removed": {"type": "boolean", "description": "false in a dry run"},
        "more": {"type": "boolean", "description": "more jobs are due than one request removes: send it again"},
        "older_than_s": _NUMBER,
    },
}
DELETED: Schema = {"type": "object", "required": ["deleted"],
                   "properties": {"deleted": {"type": "string", "pattern": JOB_ID}}}
WORKER_DETAILS: Schema = {
    "allOf": [ref("Worker"), {
        "type": "object", "required": ["audit_status", "results_logged", "recent_chunks"],
        "properties": {
            "audit_status": {"type": "object", "required": ["level", "text"],
                             "properties": {"level": _STR, "text": _STR}},
            "results_logged": {"type": "integer", "minimum": 0},
            "recent_chunks": {"type": "array", "items": {
                "type": "object", "required": ["job", "chunk", "amount_micro", "tokens", "job_exists"],
                "properties": {"job": _STR, "chunk": _STR, "amount_micro": _INT, "tokens": _TOKENS,
                               "account": _STR, "job_exists": {"type": "boolean"}}}},
        }}],
}
HEALTH: Schema = {"type": "object", "required": ["ok", "redis"],
                  "properties": {"ok": {"const": True}, "redis": {"type": "boolean",
                                                                  "description": "Redis answered a PING"}}}

COMPONENTS: dict[str, Schema] = {
    "Problem": PROBLEM,
    "JobSpec": JOB_SPEC, "PiParams": PI_PARAMS, "MandelbrotParams": MANDELBROT_PARAMS,
    "Job": JOB, "JobList": JOB_LIST, "Worker": WORKER, "WorkerList": WORKER_LIST,
    "Transfer": TRANSFER, "TransferDone": TRANSFER_DONE, "Balance": BALANCE, "Leaderboard": LEADERBOARD,
    "TokenMetrics": TOKEN_METRICS, "Checkpoint": CHECKPOINT,
    "GridReport": GRID_REPORT, "GridAccepted": GRID_ACCEPTED,
    "Enrolment": ENROLMENT, "Credentials": CREDENTIALS, "ProfileRequest": PROFILE_REQUEST, "Profile": PROFILE,
    "Deleted": DELETED, "PruneRequest": PRUNE_REQUEST, "Pruned": PRUNED, "WorkerDetails": WORKER_DETAILS,
    "ChunkingMetrics": CHUNKING_METRICS, "TilingMetrics": TILING_METRICS,
    "SustainabilityMetrics": SUSTAINABILITY_METRICS, "SecurityMetrics": SECURITY_METRICS, "Health": HEALTH,
}
