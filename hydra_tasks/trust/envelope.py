"""Signed envelopes: everything a volunteer tells the control plane travels in one.

A volunteer writes nothing to Hydra's state itself. Its registration, heartbeats (with its pause
state), results, declines, failures and grid reports are each sealed in an envelope signed with
its Ed25519 key (:mod:`hydra_tasks.trust.identity`) and sent as the one Celery task
``hydra.intake`` to the ``hydra.intake`` queue. The control plane's intake worker opens the
envelope, checks the signature against the key it names, finds whose key that is, and only then
writes state (:mod:`hydra_tasks.intake`).

An envelope is the JSON object ``{"v": 1, "action", "key", "sent_at", "body", "sig"}``; ``sig`` is
Ed25519 by ``key`` over the canonical JSON of the other five fields. ``sent_at`` is the
volunteer's clock and is only logged: the control plane stamps everything with its own time.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass
from typing import Any, Mapping

from nacl.signing import SigningKey

from ..errors import MalformedMessage
from . import identity

VERSION = 1
_FIELDS = frozenset({"v", "action", "key", "sent_at", "body", "sig"})


class Action(str, enum.Enum):
    """What an envelope carries."""

    REGISTER = "register"    # a worker starts: its calibration and capabilities (and a join secret, once)
    HEARTBEAT = "heartbeat"  # alive, online or paused (and why), with the same facts as register
    OFFLINE = "offline"      # a worker shuts down cleanly
    RESULT = "result"        # a chunk's result, decline or failure (itself signed: trust/results.py)
    RESULTS = "results"      # the results of a bundle of chunks (hydra.compute_bundle), each one as in RESULT
    GRID = "grid"            # the grid zone and on-site renewable share the worker draws from


@dataclass(frozen=True)
class Envelope:
    """An opened envelope whose signature verified: ``key`` really sent ``body``."""

    action: Action
    key: str          # the signer's Ed25519 public key, hex
    sent_at: float    # the signer's clock (not trusted)
    body: dict[str, Any]


def _signed_part(action: str, key: str, sent_at: float, body: Mapping[str, Any]) -> dict[str, Any]:
    return {"v": VERSION, "action": action, "key": key, "sent_at": sent_at, "body": dict(body)}


def seal(key: SigningKey, action: Action, body: Mapping[str, Any], *, sent_at: float | None = None) -> dict[str, Any]:
    """The envelope a volunteer sends."""
    part = _signed_part(action.value, identity.public_hex(key), time.time() if sent_at is None else sent_at, body)
    return {**part, "sig": identity.sign(key, part)}


def open_envelope(raw: object) -> Envelope:
    """Check an envelope's form (MalformedMessage) and then its signature (SignatureError)."""
    if not isinstance(raw, Mapping) or set(raw) != _FIELDS:
        raise MalformedMessage(f"not an envelope: expected exactly the fields {sorted(_FIELDS)}")
    if raw["v"] != VERSION:
        raise MalformedMessage(f"envelope version {raw['v']!r} is not {VERSION}")
    try:
        action = Action(raw["action"])
    except ValueError:
        raise MalformedMessage(f"unknown action {str(raw['action'])[:40]!r}") from None
    key, sent_at, body = raw["key"], raw["sent_at"], raw["body"]
    if not identity.is_public_key(key):
        raise MalformedMessage("'key' must be an Ed25519 public key (64 lowercase hex digits)")
    if isinstance(sent_at, bool) or not isinstance(sent_at, (int, float)) or not math.isfinite(sent_at):
        raise MalformedMessage("'sent_at' must be a number (unix seconds)")
    if not isinstance(body, Mapping):
        raise MalformedMessage("'body' must be a JSON object")
    try:
        signed = identity.canonical(_signed_part(action.value, key, sent_at, body))
    except ValueError as exc:  # NaN or the like inside the body: cannot be canonical JSON
        raise MalformedMessage(f"the body cannot be checked: {exc}") from None
    identity.verify_bytes(key, signed, raw["sig"])
    return Envelope(action, key, float(sent_at), dict(body))
