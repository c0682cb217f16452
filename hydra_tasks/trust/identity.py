"""Worker identity: one Ed25519 key pair per volunteer (PyNaCl), and signed messages.

* The key is created on a worker's first start in ``HYDRA_KEY_FILE`` (default
  ``<HYDRA_DATA_DIR>/worker.key``), mode 0600, and its public half is registered with the worker.
* The key *is* the volunteer's account: ``hydra key export`` prints it as one line
  (``hydra-ed25519:<hex seed>``) and ``hydra key import`` installs it on another machine, so the
  balance follows the volunteer.
* A signed message is a JSON object; the signature is Ed25519 over its canonical form (sorted
  keys, no spaces, ASCII), so any client in any language can produce it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from ..errors import IdentityError, SignatureError
from ..secrets_io import create_private
from ..settings import Settings

KEY_FILE_NAME = "worker.key"
MAX_NONCE = 2**53 - 1  # a signed request's nonce: a whole number below 2^53 (exact in Lua and in JavaScript)
EXPORT_PREFIX = "hydra-ed25519:"
_HEX = frozenset("0123456789abcdef")


def key_path(settings: Settings) -> Path:
    return Path(settings.key_file).expanduser() if settings.key_file else settings.data_dir / KEY_FILE_NAME


def decode_export(text: str, *, where: str = "The key text") -> SigningKey:
    """The key in a line printed by :func:`export_text`; IdentityError if it is not one."""
    body = text.strip()
    if not body.startswith(EXPORT_PREFIX) or len(body) != len(EXPORT_PREFIX) + 64 \
            or not set(body[len(EXPORT_PREFIX):]) <= _HEX:
        raise IdentityError(f"{where} is not a Hydra key; it must be one line '{EXPORT_PREFIX}<64 hex digits>' "
                            "as printed by 'hydra key export'.")
    return SigningKey(bytes.fromhex(body[len(EXPORT_PREFIX):]))


def export_text(key: SigningKey) -> str:
    """The key as one line; whoever has it owns the account, so keep it secret."""
    return EXPORT_PREFIX + bytes(key).hex()


def load_key(path: Path) -> SigningKey:
    """The key stored at ``path``; IdentityError if it is missing or malformed."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        raise IdentityError(f"No worker key at {path}; start a worker once to create one, or run "
                            "'hydra key import'.") from None
    except OSError as exc:
        raise IdentityError(f"Cannot read the worker key {path}: {exc.strerror}; check its permissions.") from None
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # someone loosened it: the key is the account
    return decode_export(text, where=f"The key file {path}")


def _write_new(path: Path, key: SigningKey) -> bool:
    """Write ``key`` to ``path`` atomically (complete or not at all, mode 0600).
    False if a key already exists there (then nothing is changed)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return create_private(path, export_text(key) + "\n")


def load_or_create(path: Path) -> SigningKey:
    """The key at ``path``, created first if there is none (safe against concurrent starts)."""
    try:
        if not path.exists():
            _write_new(path, SigningKey.generate())
        return load_key(path)
    except OSError as exc:
        raise IdentityError(f"Cannot create the worker key {path} ({exc.strerror or exc}); make its directory "
                            "writable or point HYDRA_KEY_FILE elsewhere.") from None


def import_key(text: str, path: Path, *, replace: bool = False) -> SigningKey:
    """Install an exported key at ``path``. An existing *different* key is only replaced with
    ``replace=True`` (it would be lost, with its account, unless exported first)."""
    key = decode_export(text, where="The text given")
    if path.exists():
        if bytes(load_key(path)) == bytes(key):
            return key
        if not replace:
            raise IdentityError(f"{path} already holds another key; export it first ('hydra key export'), then "
                                "import with --replace if you really want to switch accounts.")
        path.unlink()
    if not _write_new(path, key):
        raise IdentityError(f"{path} was created by another process meanwhile; run the import again.")
    return key


def public_hex(key: SigningKey | VerifyKey) -> str:
    verify = key.verify_key if isinstance(key, SigningKey) else key
    return bytes(verify).hex()


def is_public_key(text: object) -> bool:
    return isinstance(text, str) and len(text) == 64 and set(text) <= _HEX


def canonical(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes a signature covers."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def sign(key: SigningKey, payload: Mapping[str, Any]) -> str:
    """Hex Ed25519 signature over ``canonical(payload)``."""
    return key.sign(canonical(payload)).signature.hex()


def verify(public_key: str, payload: Mapping[str, Any], signature: object) -> None:
    """Check a signature made by :func:`sign`; SignatureError says what is wrong."""
    verify_bytes(public_key, canonical(payload), signature)


def verify_bytes(public_key: str, message: bytes, signature: object) -> None:
    """Check an Ed25519 signature over ``message`` (already canonical); SignatureError says what is wrong."""
    if not is_public_key(public_key):
        raise SignatureError("The signer has no valid public key registered.")
    if not isinstance(signature, str) or len(signature) != 128 or not set(signature) <= _HEX:
        raise SignatureError("'signature' must be 128 lowercase hex digits (an Ed25519 signature).")
    try:
        VerifyKey(bytes.fromhex(public_key)).verify(message, bytes.fromhex(signature))
    except BadSignatureError:
        raise SignatureError("The signature does not match the message and the signer's registered key.") from None


# --- signed requests (transfers, ledger/book.py; profiles, ledger/profiles.py) -------------------------
def new_nonce() -> int:
    """A nonce for a signed request: the clock in microseconds, so each new request's is above the
    last one (below 2^53 for another 200 years)."""
    return time.time_ns() // 1000


def is_nonce(value: object) -> bool:
    """A whole number from 0 to :data:`MAX_NONCE` (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_NONCE


def signed_request(key: SigningKey, message: Mapping[str, Any]) -> dict[str, Any]:
    """The body of a signed request: ``message`` (an ``action`` and its fields) without the
    ``action``, which the endpoint implies, plus ``signature`` over the whole message."""
    return {**{k: v for k, v in message.items() if k != "action"}, "signature": sign(key, message)}
