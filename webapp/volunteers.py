"""Self-enrolment: ``POST /api/volunteers``, off unless ``HYDRA_SELF_ENROLMENT``.

The body is signed with the volunteer's own Ed25519 key (``trust.volunteers.signed_enrolment``);
the answer is its credentials (201), with the key already bound. Refused with 403 while
self-enrolment is off, 429 over ``HYDRA_RATE_LIMIT_ENROLMENT`` (webapp/ratelimit.py, checked first) or
``HYDRA_SELF_ENROLMENT_PER_HOUR`` (or too many from one address), both with ``Retry-After``;
401 for a bad or stale signature, 409 for a name or key enrolled already.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, request

from hydra_tasks.trust import volunteers

from .context import hydra
from .openapi import validated_body

log = logging.getLogger(__name__)

bp = Blueprint("volunteers", __name__, url_prefix="/api")


@bp.post("/volunteers")
def enrol() -> tuple[Response, int]:
    app = hydra()
    settings = app.settings
    volunteers.check_self_enrolment(settings)  # before anything else: 403 while it is off
    network = volunteers.public_url(settings, app.redis_url)
    base = volunteers.volunteer_url(network, host=settings.public_host)
    credentials = volunteers.self_enrol(app.redis, settings, validated_body(), address=request.remote_addr or "?",
                                        redis_url_for_volunteer=base,
                                        ca_pem=volunteers.deployment_ca(settings, network))
    log.info("volunteer %s enrolled itself (regions %s)", credentials.name, ",".join(credentials.regions))
    return jsonify(credentials.to_json()), 201
