"""The operator API token: where it comes from, and the ``require_token`` decorator.

Every endpoint that changes anything needs ``Authorization: Bearer <token>``. The token is
``HYDRA_API_TOKEN`` if set, else a random one kept in ``<HYDRA_DATA_DIR>/api_token`` (mode
0600), created on first start and reused afterwards. The token itself is never logged and
never put into a response; a 401 says where to find it without naming a path.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from flask import request
from flask.typing import ResponseReturnValue

from hydra_tasks.errors import ConfigError
from hydra_tasks.secrets_io import create_private
from hydra_tasks.settings import Settings

from .context import api_token
from .errors import problem as problem_response

log = logging.getLogger(__name__)

TOKEN_FILE_NAME = "api_token"
_TOKEN_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~+/=")

# Shown with every 401: helpful, but the same whatever the configuration, and with no path in it.
WHERE_THE_TOKEN_IS = ("Send the operator token in the 'Authorization: Bearer <token>' header; it is HYDRA_API_TOKEN "
                      f"if the operator set it, else in the data dir's {TOKEN_FILE_NAME} file ($HYDRA_DATA_DIR/"
                      f"{TOKEN_FILE_NAME} on the webapp's host).")

OPERATOR_ONLY = "hydra_operator_only"  # attribute set on every view wrapped by require_token

F = TypeVar("F", bound=Callable[..., ResponseReturnValue])


@dataclass(frozen=True)
class ApiToken:
    """The operator token and a description of where it lives (for the webapp's log, not for clients)."""

    value: str = field(repr=False)
    source: str

    def matches(self, presented: str) -> bool:
        """Constant-time comparison with a presented token."""
        return hmac.compare_digest(presented.encode(), self.value.encode())


def token_path(settings: Settings) -> Path:
    return settings.data_dir / TOKEN_FILE_NAME


def load_api_token(settings: Settings) -> ApiToken:
    """``settings.api_token`` if set, else the token in the data dir (created if missing)."""
    if settings.api_token:
        return ApiToken(settings.api_token, "set by HYDRA_API_TOKEN")
    path = token_path(settings)
    return ApiToken(_read_or_create(path), f"stored in {path}")


def _read_or_create(path: Path) -> str:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        existing = _read(path)
        if existing is not None:
            return existing
        return _create(path)
    except OSError as exc:
        raise ConfigError(
            f"Cannot read or create the API token file {path} ({exc.strerror or exc}). Make HYDRA_DATA_DIR "
            f"a directory you can write to, or set HYDRA_API_TOKEN."
        ) from None


def _read(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return None
    if not text or not set(text) <= _TOKEN_ALPHABET:
        raise ConfigError(
            f"The API token file {path} is empty or malformed; delete it and restart the webapp "
            f"(a new token will be generated), or set HYDRA_API_TOKEN."
        )
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # someone loosened it: the token is a password
    return text


def _create(path: Path) -> str:
    """Write a new token atomically (complete or not at all, mode 0600); another process's wins."""
    token = secrets.token_urlsafe(32)
    if not create_private(path, token + "\n"):  # another process created the file first
        existing = _read(path)
        if existing is None:  # pragma: no cover - created and deleted again in between
            raise ConfigError(f"The API token file {path} vanished while it was being created; try again.")
        return existing
    log.info("Created a new operator API token in %s (mode 0600).", path)
    return token


def presented_token() -> str | None:
    """The token in ``Authorization: Bearer <token>``, or None if there is none."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def require_token(view: F) -> F:
    """Refuse the request with 401 unless it carries the operator API token."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        token = api_token()
        presented = presented_token()
        if presented is None:
            problem = "This endpoint needs the operator API token"
        elif not token.matches(presented):
            problem = "The operator API token is wrong"
        else:
            return view(*args, **kwargs)
        log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote_addr, problem.lower())
        response = problem_response(f"{problem}. {WHERE_THE_TOKEN_IS}", 401)  # application/problem+json
        response.headers["WWW-Authenticate"] = 'Bearer realm="hydra"'
        return response

    setattr(wrapper, OPERATOR_ONLY, True)  # webapp/ratelimit.py's test tells these endpoints from open ones
    return wrapper  # type: ignore[return-value]
