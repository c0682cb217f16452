"""The token ledger API.

``POST /api/transfer_tokens`` is authenticated by the sender's Ed25519 signature over the
transfer (see :mod:`hydra_tasks.ledger.book`), not by the operator token: through the API only the
key's owner can move its tokens, and the operator cannot either (README, "Trust model"). The
reads are public.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from hydra_tasks.ledger import book as ledger
from hydra_tasks.ledger import profiles

from .context import hydra
from .inputs import query_int
from .openapi import validated_body

log = logging.getLogger(__name__)

bp = Blueprint("tokens", __name__, url_prefix="/api")

DEFAULT_LEADERBOARD, MAX_LEADERBOARD = 10, 100


@bp.post("/transfer_tokens")
def transfer_tokens() -> tuple[Response, int]:
    done = ledger.transfer(hydra().redis, validated_body())
    log.info("transfer %s of %s tokens from %s to %s", done["entry"], done["amount"], done["from"][:12],
             done["to"][:12])
    return jsonify(done), 200 if done["repeated"] else 201


@bp.get("/worker_balance/<who>")
def worker_balance(who: str) -> Response:
    return jsonify(ledger.balance(hydra().redis, who))


def leaderboard_view(limit: int) -> dict[str, list[dict[str, object]]]:
    """The leaderboard with display names and teams (ledger/profiles.py), and the team leaderboard."""
    client = hydra().redis
    board = ledger.leaderboard(client, limit)
    return {"by_balance": profiles.annotate(client, board["by_balance"]),
            "by_earned": profiles.annotate(client, board["by_earned"]),
            "by_team": profiles.team_leaderboard(client, limit)}


@bp.get("/leaderboard")
def leaderboard() -> Response:
    """``{by_balance, by_earned, by_team}`` (``?limit=N``, 1..100, default 10). Account rows are
    ``{rank, account, micro, tokens, display_name, team, shown}`` (``display_name`` and ``team`` null
    when not set; ``shown`` is the display name, else the account's first 16 hex digits and "…");
    team rows are ``{rank, team, members, micro, tokens}``, ranked by what the members ever earned."""
    limit = query_int("limit", default=DEFAULT_LEADERBOARD, low=1, high=MAX_LEADERBOARD)
    return jsonify(leaderboard_view(limit))


@bp.get("/token_metrics")
def token_metrics() -> Response:
    return jsonify(ledger.token_metrics(hydra().redis))


@bp.get("/ledger/checkpoint")
def ledger_checkpoint() -> Response:
    """The newest signed checkpoint of the journal (ledger/chain.py), so anyone can keep a copy."""
    from dataclasses import asdict

    from werkzeug.exceptions import NotFound

    from hydra_tasks.ledger import chain

    found = chain.load(hydra().settings.data_dir)
    if not found:
        raise NotFound("No ledger checkpoint yet: the control plane signs one every HYDRA_CHECKPOINT_INTERVAL_S "
                       "once the journal has entries (or run `hydra ledger checkpoint`).")
    return jsonify(checkpoint=asdict(found[-1]), count=len(found))
