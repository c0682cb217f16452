"""The journal's hash chain and the signed checkpoints that pin it from outside Redis.

Every journal entry carries ``prev`` and ``hash`` (``lua/_journal.lua``): ``hash`` is SHA-1 over
``prev`` and the entry's own field names and values in order, each written as ``<length>:<text>``.
A rewritten, removed or inserted entry breaks the chain. What a chain cannot show is that it was
flushed or cut short and started again: for that the control plane signs **checkpoints**
``{length, head, supply, minted, transferred, at}`` with its own Ed25519 key and appends them to a
file in its data dir (``ledger-checkpoints.jsonl``), outside Redis. ``hydra ledger verify`` checks
that the journal still has each checkpoint's entry at its position, with the same hash, and the
same supply up to it.

SHA-1 is the hash Redis's Lua offers (``redis.sha1hex``), and the chain must be extended inside
the script that mints or transfers. Rewriting an entry unnoticed would need a second preimage of
SHA-1, which nobody knows how to find; the signed checkpoints do not depend on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import redis
from nacl.signing import SigningKey

from .. import keys
from ..errors import SignatureError
from ..redis_conn import confirm_replicated
from ..secrets_io import create_private
from ..trust import identity

GENESIS = "0" * 40
CHECKPOINT_FILE = "ledger-checkpoints.jsonl"
CONTROL_KEY_FILE = "control.key"
CHAIN_FIELDS = ("prev", "hash")


def entry_hash(prev: str, fields: Iterable[tuple[str, str]]) -> str:
    """The hash of an entry whose own fields (without prev and hash) are ``fields``, in order."""
    parts = [f"{len(prev.encode())}:{prev}"]
    for name, value in fields:
        for text in (name, value):
            parts.append(f"{len(text.encode())}:{text}")
    return hashlib.sha1("".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """The journal's state at one moment, signed by the control plane."""

    length: int          # journal entries at that moment (XLEN)
    head: str            # the hash of the last of them ("" for an empty journal)
    supply: int          # micro-tokens in existence then
    minted: int
    transferred: int
    at: float
    key: str             # the control plane's public key (hex)
    signature: str = ""

    def message(self) -> dict[str, Any]:
        return {"action": "ledger_checkpoint", **{k: v for k, v in asdict(self).items() if k != "signature"}}

    def verify(self, public_key: str | None = None) -> None:
        """SignatureError unless the signature is the control plane's (``public_key`` if given)."""
        if public_key is not None and public_key != self.key:
            raise SignatureError("the checkpoint is signed by another key than this control plane's")
        identity.verify(self.key, self.message(), self.signature)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Checkpoint":
        try:
            return cls(length=int(data["length"]), head=str(data["head"]), supply=int(data["supply"]),
                       minted=int(data["minted"]), transferred=int(data["transferred"]), at=float(data["at"]),
                       key=str(data["key"]), signature=str(data["signature"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise SignatureError(f"a malformed ledger checkpoint ({exc!r})") from None


def control_key(data_dir: Path) -> SigningKey:
    """The control plane's signing key (``<data_dir>/control.key``, mode 0600, created once)."""
    path = Path(data_dir) / CONTROL_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        create_private(path, identity.export_text(SigningKey.generate()) + "\n")
    return identity.load_key(path)


def take(client: redis.Redis, key: SigningKey, *, now: float | None = None) -> Checkpoint:
    """A signed checkpoint of the journal as it is now (read in one MULTI, so it is consistent)."""
    with client.pipeline(transaction=True) as pipe:
        pipe.xlen(keys.LEDGER_JOURNAL)
        pipe.xrevrange(keys.LEDGER_JOURNAL, count=1)
        pipe.hmget(keys.LEDGER_STATS, "supply", "minted", "transferred")
        length, last, (supply, minted, transferred) = pipe.execute()
    head = last[0][1].get("hash", "") if last else ""
    unsigned = Checkpoint(int(length), head, int(supply or 0), int(minted or 0), int(transferred or 0),
                          time.time() if now is None else now, identity.public_hex(key))
    signed = Checkpoint(**{**asdict(unsigned), "signature": identity.sign(key, unsigned.message())})
    return signed


def record(data_dir: Path, checkpoint: Checkpoint) -> None:
    """Append a checkpoint to ``<data_dir>/ledger-checkpoints.jsonl`` (one JSON object per line, fsynced)."""
    path = Path(data_dir) / CHECKPOINT_FILE
    line = json.dumps(asdict(checkpoint), sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_now(client: redis.Redis, data_dir: Path) -> Checkpoint | None:
    """Take and record a checkpoint if the journal grew since the last one (the beat task)."""
    latest = load(data_dir)
    current = take(client, control_key(data_dir))
    if latest and latest[-1].length == current.length and latest[-1].head == current.head:
        return None
    # With HYDRA_REDIS_WAIT_REPLICAS, sign only what replicas hold: a checkpoint naming entries a failover
    # then lost would make `hydra ledger verify` fail on the new primary (ReplicationShort: no checkpoint now).
    confirm_replicated(client, "The journal's newest entries")
    record(data_dir, current)
    return current


def load(data_dir: Path) -> list[Checkpoint]:
    """Every recorded checkpoint, oldest first (a torn last line, from a crash, is skipped)."""
    path = Path(data_dir) / CHECKPOINT_FILE
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for number, line in enumerate(lines, 1):
        try:
            out.append(Checkpoint.from_json(json.loads(line)))
        except (ValueError, SignatureError):
            if number < len(lines):
                raise SignatureError(f"{path}, line {number}: not a checkpoint; the file was edited") from None
    return out


def walk(entries: Iterable[tuple[str, Mapping[str, str]]]) -> Iterator[tuple[int, str, Mapping[str, str], str | None]]:
    """(position, id, fields, problem) for each entry; problem says how the chain broke there.
    Entries written before the chain existed (no hash) may only come first."""
    prev: str | None = None
    for position, (entry_id, fields) in enumerate(entries, 1):
        if "hash" not in fields:
            yield position, entry_id, fields, (None if prev is None else "an entry without a hash after chained ones")
            continue
        expected_prev = GENESIS if prev is None else prev
        own = [(k, v) for k, v in fields.items() if k not in CHAIN_FIELDS]
        problem = None
        if fields.get("prev") != expected_prev:
            problem = "its 'prev' is not the hash of the entry before it (an entry was removed or inserted)"
        elif entry_hash(expected_prev, own) != fields["hash"]:
            problem = "its hash does not match its fields (it was rewritten)"
        prev = fields["hash"]
        yield position, entry_id, fields, problem
