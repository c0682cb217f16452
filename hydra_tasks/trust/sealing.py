"""Sealed chunk payloads (``HYDRA_ENCRYPTION``): PyNaCl public-key boxes between the control plane
and the one worker a chunk is leased to.

* **Keys.** The control plane has its own Curve25519 box key pair, ``<data dir>/control-box.key``
  (mode 0600, created once, never logged) with its public half in ``control-box.pub``. A worker's
  box key is derived from its Ed25519 signing key (``to_curve25519_private_key``), and the control
  plane derives the matching public key from the Ed25519 ``public_key`` it already has in the
  worker's record: no new key to register.
* **Pinning.** A worker must know the control plane's box public key *before* it talks to the
  broker, so nobody on the broker can substitute one: an enrolled volunteer finds it in its
  credentials (``box_key``, from ``hydra volunteer add``, handed over with the Redis password);
  a local worker of a trusted single-machine stack reads ``control-box.pub`` from the data dir it
  shares with the control plane (:func:`pinned_control_key`). The worker names the key it pinned in
  every registration and heartbeat (``box_key``), and with encryption on the intake refuses a worker
  that pinned none or another one, so no chunk is ever sealed to a worker that cannot open it.
* **A chunk** travels as ``{"sealed": 1, "job_id", "chunk_id", "box"}``: the ids stay in the clear
  (random ids, needed to report a box that does not open), everything else (kind, params, units)
  and the attempt are inside ``box`` = base64 of ``Box(control, worker).encrypt(JSON)``
  (XSalsa20-Poly1305, random nonce). Opening checks the ids and attempt against the clear ones, so
  a box cannot be moved to another message.
* **A result** (:func:`seal_result`) keeps its signed claims in the clear (ids, worker, times, energy,
  the payload's digest, the signature: ``hydra ledger verify`` checks them) and replaces ``payload``
  and ``error`` by ``sealed``, a box the other way. The worker signs the plaintext digest as before,
  so the signature still covers what it computed; the intake opens the box before ``collect``.

A box that does not open (tampered, or sealed to another key) raises :class:`SealError`; nothing in
it is used. The Box's MAC means only the control plane and that one worker can make a box that
opens with their pair of keys.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from pathlib import Path
from typing import Any, Mapping

import redis
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from .. import keys
from ..errors import HydraError, SealError
from ..secrets_io import create_private, write_private
from ..settings import Settings

CONTROL_BOX_KEY_FILE = "control-box.key"
CONTROL_BOX_PUBLIC_FILE = "control-box.pub"
KEY_PREFIX = "hydra-x25519:"          # the private key file: one line, KEY_PREFIX + 64 hex digits
SEALED = "sealed"                     # the field that marks (and, in a result, holds) a sealed payload
VERSION = 1
_HEX = frozenset("0123456789abcdef")
_CHUNK_FIELDS = frozenset({SEALED, "job_id", "chunk_id", "box"})


# --- keys ----------------------------------------------------------------------------------
def is_box_key(text: object) -> bool:
    """A Curve25519 public key as 64 lowercase hex digits."""
    return isinstance(text, str) and len(text) == 64 and set(text) <= _HEX


def control_box_key(data_dir: Path) -> PrivateKey:
    """The control plane's box key (``<data_dir>/control-box.key``, 0600, created once; safe against
    concurrent first starts), loaded once per process."""
    return _control_box_key(Path(data_dir))


@functools.cache
def _control_box_key(data_dir: Path) -> PrivateKey:
    path = data_dir / CONTROL_BOX_KEY_FILE
    try:
        if not path.exists():
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            create_private(path, KEY_PREFIX + bytes(PrivateKey.generate()).hex() + "\n")
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError as exc:
        raise SealError(f"Cannot create or read the control plane's box key {path} ({exc.strerror or exc}); "
                        "make the data dir writable by the control plane.") from None
    body = text[len(KEY_PREFIX):]
    if not text.startswith(KEY_PREFIX) or not is_box_key(body):
        raise SealError(f"{path} is not a box key (one line '{KEY_PREFIX}<64 hex digits>'); move it away and let "
                        "the control plane create a new one (volunteers then need new credentials).")
    key = PrivateKey(bytes.fromhex(body))
    public = data_dir / CONTROL_BOX_PUBLIC_FILE
    if _read_public(public) != bytes(key.public_key).hex():
        try:
            write_private(public, bytes(key.public_key).hex() + "\n")
        except OSError:
            pass  # a read-only data dir (compose's webapp): the private key is enough here
    return key


def _read_public(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return text if is_box_key(text) else None


def control_public_hex(data_dir: Path) -> str:
    """The control plane's box public key (hex), as volunteers get it in their credentials."""
    return bytes(control_box_key(data_dir).public_key).hex()


def pinned_control_key(settings: Settings) -> str | None:
    """Volunteer side: the control plane's box public key this worker trusts (hex), or None.

    An enrolled volunteer (``HYDRA_JOIN_FILE``) takes it from its credentials only; a local worker
    of a trusted stack from ``control-box.pub`` in its data dir. Never from the broker. A key found
    is kept for the process's life."""
    where = (settings.join_file, settings.data_dir)
    if where in _pinned:
        return _pinned[where]
    found = _find_pin(settings)
    if found is not None:
        _pinned[where] = found
    return found


_pinned: dict[tuple[str, Path], str] = {}


def _find_pin(settings: Settings) -> str | None:
    if settings.join_file:
        from .volunteers import Credentials

        try:
            return Credentials.load(settings.join_file).box_key
        except HydraError:
            return None
    return _read_public(settings.data_dir / CONTROL_BOX_PUBLIC_FILE)


@functools.lru_cache(maxsize=4096)
def worker_box_public(ed25519_public_hex: str) -> PublicKey:
    """The box public key of the worker whose Ed25519 public key is ``ed25519_public_hex``."""
    try:
        return VerifyKey(bytes.fromhex(ed25519_public_hex)).to_curve25519_public_key()
    except (CryptoError, ValueError, TypeError):
        raise SealError("the worker's registered key is not a valid Ed25519 public key, so nothing can be "
                        "sealed to it") from None


@functools.lru_cache(maxsize=4096)
def _box(private: bytes, public: bytes) -> Box:
    return Box(PrivateKey(private), PublicKey(public))  # the shared key is computed once per pair


def control_box(data_dir: Path, worker_public_key: str) -> Box:
    """The box between the control plane and the worker with this Ed25519 public key (hex)."""
    return _box(bytes(control_box_key(data_dir)), bytes(worker_box_public(worker_public_key)))


def worker_box(key: SigningKey, control_public: str | None) -> Box:
    """Volunteer side: the box between this worker (its Ed25519 key) and the pinned control plane."""
    if not is_box_key(control_public):
        raise SealError("this worker has no control-plane box key pinned, so it cannot open sealed chunks; an "
                        "enrolled volunteer needs credentials that carry one (ask the operator for new ones: "
                        "`hydra volunteer add`), a local worker needs control-box.pub in its data dir")
    assert control_public is not None
    return _box(bytes(key.to_curve25519_private_key()), bytes.fromhex(control_public))


# --- boxes ---------------------------------------------------------------------------------
def _seal(box: Box, content: Mapping[str, Any]) -> str:
    plain = json.dumps(content, separators=(",", ":"), allow_nan=False).encode()
    return base64.b64encode(box.encrypt(plain)).decode("ascii")


def _open(box: Box, text: object) -> dict[str, Any]:
    if not isinstance(text, str):
        raise SealError("the box is not text")
    try:
        plain = box.decrypt(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise SealError("the box is not base64 of a nonce and a ciphertext") from None
    except CryptoError:
        raise SealError("the box does not open: it was tampered with, or sealed to another key") from None
    try:
        content = json.loads(plain)
    except ValueError:
        raise SealError("the opened box holds no JSON") from None
    if not isinstance(content, dict):
        raise SealError("the opened box holds no JSON object")
    return content


def is_sealed(message: object) -> bool:
    """Whether a chunk message or a result body carries a sealed payload."""
    return isinstance(message, Mapping) and SEALED in message


# --- chunks: control plane -> the worker holding the lease --------------------------------
def seal_chunk(box: Box, chunk: Mapping[str, Any], attempt: int) -> dict[str, Any]:
    """The message that carries ``chunk`` (a ChunkSpec as JSON) sealed; only its ids in the clear."""
    return {SEALED: VERSION, "job_id": str(chunk["job_id"]), "chunk_id": str(chunk["chunk_id"]),
            "box": _seal(box, {"type": "chunk", "attempt": attempt, "chunk": dict(chunk)})}


def seal_chunk_for(client: redis.Redis, settings: Settings, chunk: Mapping[str, Any], attempt: int,
                   worker_id: str) -> dict[str, Any]:
    """Control plane: seal ``chunk`` to the worker it was leased to (its registered key)."""
    public_key = client.hget(keys.worker(worker_id), "public_key")
    if not public_key:
        raise SealError(f"worker {worker_id} has no registered key to seal its chunk to")
    return seal_chunk(control_box(settings.data_dir, str(public_key)), chunk, attempt)


def open_chunk(box: Box, message: Mapping[str, Any], attempt: int) -> dict[str, Any]:
    """Volunteer side: the ChunkSpec JSON inside a sealed chunk message; SealError if it does not
    open, or does not match the ids and attempt it came with."""
    if set(message) != _CHUNK_FIELDS or message[SEALED] != VERSION:
        raise SealError(f"a sealed chunk has exactly the fields {sorted(_CHUNK_FIELDS)} and {SEALED}={VERSION}")
    content = _open(box, message["box"])
    chunk = content.get("chunk")
    if content.get("type") != "chunk" or content.get("attempt") != attempt or not isinstance(chunk, dict) \
            or chunk.get("job_id") != message["job_id"] or chunk.get("chunk_id") != message["chunk_id"]:
        raise SealError("the sealed chunk does not match the ids and attempt it was sent with")
    return chunk


# --- results: the worker -> the control plane ---------------------------------------------
def seal_result(box: Box, result: Mapping[str, Any]) -> dict[str, Any]:
    """A (signed) ChunkResult as JSON with ``payload`` and ``error`` sealed; the signed claims stay
    readable (the signature covers the payload's digest, computed over the plaintext)."""
    content = {"type": "result", "job_id": result["job_id"], "chunk_id": result["chunk_id"],
               "attempt": result["attempt"], "payload": result["payload"], "error": result.get("error")}
    out = {k: v for k, v in result.items() if k not in ("payload", "error")}
    out[SEALED] = _seal(box, content)
    return out


def open_result(box: Box, body: Mapping[str, Any]) -> dict[str, Any]:
    """Control plane: the result body with its payload and error opened; SealError if the box does
    not open or does not belong to this result."""
    if "payload" in body or "error" in body:
        raise SealError("a sealed result carries its payload and error only inside the box")
    content = _open(box, body[SEALED])
    if content.get("type") != "result" or any(content.get(k) != body.get(k) for k in ("job_id", "chunk_id",
                                                                                      "attempt")):
        raise SealError("the sealed result does not match the chunk and attempt it names")
    payload, error = content.get("payload"), content.get("error")
    if not isinstance(payload, dict) or not (error is None or isinstance(error, str)):
        raise SealError("the sealed result holds no payload object")
    opened = {k: v for k, v in body.items() if k != SEALED}
    opened.update(payload=payload, error=error)
    return opened


def open_result_from(data_dir: Path, worker_public_key: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Control plane: :func:`open_result` with the box between this control plane and the worker
    whose (verified) Ed25519 key sent it."""
    return open_result(control_box(data_dir, worker_public_key), body)
