"""Signed chunk results: a volunteer signs what it reports about a chunk with its Ed25519 key; the
control plane checks the signature against the key registered for that worker before it acts on
the result, and every chunk reward carries the signed report that earned it, so
``hydra ledger verify`` can check that each chunk mint was earned by the key it paid.

The signature covers ``{"action": "chunk_result", job_id, chunk_id, worker_id, attempt, elapsed_s,
cpu_s, energy_j, digest, error}``; the digest covers the payload (:func:`hydra_tasks.models.payload_digest`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Mapping

from nacl.signing import SigningKey

from ..models import ChunkResult
from . import identity

ACTION = "chunk_result"
_SIGNED = ("job_id", "chunk_id", "worker_id", "attempt", "elapsed_s", "cpu_s", "energy_j", "digest", "error")


def claims(result: ChunkResult | Mapping[str, Any]) -> dict[str, Any]:
    """What the signature covers."""
    data = result.to_json() if isinstance(result, ChunkResult) else result
    return {"action": ACTION, **{name: data.get(name) for name in _SIGNED}}


def sign(result: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    """``result`` (a ChunkResult as JSON) with its signature."""
    return {**result, "signature": identity.sign(key, claims(result))}


def check(result: ChunkResult, public_key: str) -> None:
    """SignatureError unless ``result`` is signed by ``public_key``."""
    identity.verify(public_key, claims(result), result.signature)


def proof(result: ChunkResult) -> dict[str, str]:
    """The signed report, as a mint carries it into the journal (``result``, ``result_signature``)."""
    return {"result": json.dumps(claims(result), sort_keys=True, separators=(",", ":")),
            "result_signature": result.signature or ""}


@functools.cache
def worker_key(path: Path) -> SigningKey:
    """The volunteer's key, loaded once per process (created on first start, see worker/runtime.py)."""
    return identity.load_or_create(path)
