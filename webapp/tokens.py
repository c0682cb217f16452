"""The token ledger API.

``POST /api/transfer_tokens`` is authenticated by the sender's Ed25519 signature over the
transfer (see :mod:`hydra_tasks.ledger.book`), not by the operator token: through the API only the
key's owner can move its tokens, and the operator cannot either (README, "Trust model"). The
reads are public.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import BadRequest

from hydra_tasks.ledger import book as ledger

from .context import hydra
from .jobs import json_object_body

log = logging.getLogger(__name__)

bp = Blueprint("tokens", __name__, url_prefix="/api")


@bp.post("/transfer_tokens")
def transfer_tokens() -> tuple[Response, int]:
    done = ledger.transfer(hydra().redis, json_object_body())
    log.info("transfer %s of %s tokens from %s to %s", done["entry"], done["amount"], done["from"][:12],
             done["to"][:12])
    return jsonify(done), 200 if done["repeated"] else 201


@bp.get("/worker_balance/<who>")
def worker_balance(who: str) -> Response:
    return jsonify(ledger.balance(hydra().redis, who))


@bp.get("/leaderboard")
def leaderboard() -> Response:
    raw = request.args.get("limit", "10")
    limit = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 3 else 0
    if not 1 <= limit <= 100:
        raise BadRequest("'limit' must be a whole number from 1 to 100.")
    return jsonify(ledger.leaderboard(hydra().redis, limit))


@bp.get("/token_metrics")
def token_metrics() -> Response:
    return jsonify(ledger.token_metrics(hydra().redis))
