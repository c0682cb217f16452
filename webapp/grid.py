"""Worker-reported grid information: ``POST /api/update_grid_info``.

Authenticated to the worker itself, not the operator: the body is signed with the worker's
Ed25519 key (see :mod:`hydra_tasks.grid.site` for the format and replay protection).
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from hydra_tasks.grid.site import MAX_AGE_S, apply_report, parse_report, zone_known_locally
from hydra_tasks.scheduling.router import carbon_provider

from .context import hydra
from .openapi import validated_body

log = logging.getLogger(__name__)

bp = Blueprint("grid", __name__, url_prefix="/api")


def _zone_known(zone: str) -> bool:
    return zone_known_locally(carbon_provider(hydra().settings), zone)


@bp.post("/update_grid_info")
def update_grid_info() -> Response:
    report, message, signature = parse_report(validated_body())
    apply_report(hydra().redis, report, message, signature, zone_known=_zone_known)
    log.info("worker %s reported zone %s with %.0f%% on-site renewables", report.worker_id, report.zone,
             100 * report.renewable_share)
    return jsonify(worker_id=report.worker_id, zone=report.zone, renewable_share=report.renewable_share,
                   reported_at=report.timestamp, valid_for_s=MAX_AGE_S)
