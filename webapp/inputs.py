"""Reading what a client sends, one way for every endpoint: the request body (at most
:data:`MAX_REQUEST_BYTES`, chunked or not, never a prefix), the body as a strict JSON object
(no duplicate keys, only finite numbers), and integer query parameters (ASCII digits only).

Every refusal is a 4xx whose message says what to send instead.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from flask import request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge
from werkzeug.wsgi import get_input_stream

MAX_REQUEST_BYTES = 64 * 1024  # a job spec is a few hundred bytes; anything bigger is refused with 413
TOO_LARGE_MESSAGE = (f"The request body is larger than {MAX_REQUEST_BYTES // 1024} KiB ({MAX_REQUEST_BYTES} bytes); "
                     "send a smaller one (a job specification or a signed transfer is a few hundred bytes).")

MAX_INT_DIGITS = 30  # far above any count, amount (micro-tokens) or nonce the API takes
_DIGITS = re.compile(r"[0-9]+")
_EXAMPLE_JOB = '{"kind": "pi", "params": {"samples": 100000000}}'


# --- the body --------------------------------------------------------------------------------------
def read_body() -> bytes:
    """The whole request body, or 413 if it is over :data:`MAX_REQUEST_BYTES`.

    A ``Content-Length`` over the limit is refused before reading. A body without one (``Transfer-
    Encoding: chunked``) is read up to one byte past the limit; if that byte arrives, the body is
    refused, never cut to the limit and accepted.
    """
    declared = request.content_length
    if declared is not None and declared > MAX_REQUEST_BYTES:
        raise RequestEntityTooLarge(TOO_LARGE_MESSAGE)
    # Bounded by Content-Length, or unbounded but terminated by the server (chunked); empty if
    # neither, so this never waits for bytes that are not coming.
    stream = get_input_stream(request.environ, max_content_length=None)
    body = bytearray()
    try:
        while len(body) <= MAX_REQUEST_BYTES:
            piece = stream.read(MAX_REQUEST_BYTES + 1 - len(body))
            if not piece:
                return bytes(body)
            body += piece
    except (OSError, ValueError) as exc:  # e.g. a malformed chunk header, or the client went away
        raise BadRequest(f"The request body could not be read ({_short(exc)}); send it again, with a "
                         "Content-Length or well-formed chunked encoding.") from None
    raise RequestEntityTooLarge(TOO_LARGE_MESSAGE)


def json_object_body() -> dict[str, Any]:
    """The request body as a JSON object, or 400 (413 if too large) saying exactly what is wrong."""
    if not request.is_json:
        raise BadRequest(f"Send the body as a JSON object with 'Content-Type: application/json' "
                         f"(got {request.mimetype or 'no Content-Type'!r}).")
    body = read_body()
    if not body.strip():
        raise BadRequest(f"The request body is empty; send a JSON object, e.g. a job: {_EXAMPLE_JOB}.")
    try:
        data = json.loads(body, object_pairs_hook=_unique_keys, parse_constant=_reject_constant,
                          parse_float=_finite_float, parse_int=_short_int)
    except DuplicateKey as exc:
        raise BadRequest(f"{exc}; send each key once.") from None
    except RecursionError:
        raise BadRequest("The request body is not valid JSON (it is nested too deeply).") from None
    except ValueError as exc:
        raise BadRequest(f"The request body is not valid JSON ({_short(exc)}).") from None
    if not isinstance(data, dict):
        raise BadRequest(f"The request body must be a JSON object, got a JSON {_json_type(data)}.")
    return data


class DuplicateKey(ValueError):
    """A JSON object in the body names the same key twice."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise DuplicateKey(f"duplicate key {key[:80]!r} in the JSON body")
        data[key] = value
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed; numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is too large; numbers must be finite")
    return value


def _short_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {digits} digits is too long; integers have at most {MAX_INT_DIGITS} digits")
    return int(text)


def _short(exc: BaseException) -> str:
    return str(exc)[:200] or type(exc).__name__


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


class BodyBreaksSchema(BadRequest):
    """A JSON body that breaks its operation's schema (webapp/openapi.py): the description names the
    first field and what to send; ``errors`` lists every violation as ``{"field", "message"}``."""

    def __init__(self, description: str, errors: list[dict[str, str]]) -> None:
        super().__init__(description)
        self.errors = errors


# --- query parameters --------------------------------------------------------------------------------
def query_int(name: str, *, default: int, low: int, high: int) -> int:
    """``?name=N`` as an int in ``low..high`` (``default`` if absent), else 400 naming the parameter,
    its bounds and the value sent. Only ASCII digits: not ``' 5'``, ``'+5'``, ``'5.0'``, ``'٥'``."""
    values = request.args.getlist(name)
    if not values:
        return default
    if len(values) > 1:
        raise BadRequest(f"'{name}' given {len(values)} times; give it once.")
    raw = values[0]
    if _DIGITS.fullmatch(raw):
        digits = raw.lstrip("0") or "0"
        if len(digits) <= len(str(high)) and low <= int(digits) <= high:
            return int(digits)
    shown = repr(raw[:20]) + ("…" if len(raw) > 20 else "")
    raise BadRequest(f"'{name}' must be a whole number from {low} to {high}, written with the digits 0-9 only; "
                     f"got {shown}.")
