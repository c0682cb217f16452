"""Typed access to what the app factory put into ``app.extensions``."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from flask import current_app

from hydra_tasks.celery_app import HydraCelery

if TYPE_CHECKING:
    from .auth import ApiToken

EXTENSION_KEY = "hydra"
TOKEN_EXTENSION_KEY = "hydra_api_token"


def hydra() -> HydraCelery:
    """The Hydra Celery app of the current Flask app (settings, Redis client, task sending)."""
    return cast(HydraCelery, current_app.extensions[EXTENSION_KEY])


def api_token() -> ApiToken:
    """The operator API token of the current Flask app."""
    return cast("ApiToken", current_app.extensions[TOKEN_EXTENSION_KEY])
