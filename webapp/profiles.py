"""Display names and teams: ``POST /api/profile`` (signed by the account's key) and
``GET /api/profile/<account>``.

The body of the POST is signed like a transfer (see :mod:`hydra_tasks.ledger.profiles`)::

    {"account": "<64 hex>", "display_name": "Alice", "team": "Lab 4", "nonce": 1733130000000000,
     "signature": "<128 hex: Ed25519 over the canonical {action: "profile", account, display_name, team, nonce}>"}

Answers 200 with the stored profile ``{account, display_name, team, nonce, updated_at}`` (the name
and team trimmed and NFC-normalised; "" for none); 400 for a bad field (too long, a control
character, a missing field), 401 for a bad signature, 404 for an account that does not exist yet,
409 for a nonce not above the last one, 429 over ``HYDRA_RATE_LIMIT_PROFILES``. Display names need
not be unique: the account id is what identifies a volunteer.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from werkzeug.exceptions import NotFound

from hydra_tasks.ledger import profiles

from .context import hydra
from .openapi import validated_body

log = logging.getLogger(__name__)

bp = Blueprint("profiles", __name__, url_prefix="/api")


@bp.post("/profile")
def set_profile() -> Response:
    """Set the signing account's display name and team (body and answers: the module docstring)."""
    profile = profiles.set_profile(hydra().redis, validated_body())
    log.info("account %s set its profile (team %r)", profile.account[:12], profile.team[:40])
    return jsonify(profile.to_json())


@bp.get("/profile/<account>")
def get_profile(account: str) -> Response:
    """The account's profile ``{account, display_name, team, nonce, updated_at}``; 404 if it has none."""
    found = profiles.get_profile(hydra().redis, account)
    if found is None:
        raise NotFound(f"No profile for account {account[:80]!r}; its key sets one with POST /api/profile "
                       "(`hydra profile set --name NAME --team TEAM`).")
    return jsonify(found.to_json())
