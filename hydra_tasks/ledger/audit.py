"""Audit: replay the ledger's journal and compare it with every balance and total.

``hydra ledger verify`` runs :func:`verify`: it checks every transfer's signature and nonce
order, re-adds every entry, and compares the result with every balance, every earned total, the
supply (= minted), the transferred total and the number of mint keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import redis

from .. import keys
from ..errors import SignatureError
from ..trust import identity
from .book import MAX_AMOUNT_MICRO, transfer_message


@dataclass
class Audit:
    entries: int = 0
    mints: int = 0
    transfers: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def journal(client: redis.Redis, *, batch: int = 5000) -> Iterator[tuple[str, dict[str, str]]]:
    start = "-"
    while True:
        entries = client.xrange(keys.LEDGER_JOURNAL, min=start, max="+", count=batch)
        if not entries:
            return
        yield from entries
        if len(entries) < batch:
            return
        start = "(" + entries[-1][0]


def verify(client: redis.Redis) -> Audit:
    """Replay the journal and compare it with every balance and total (see the module docstring).
    Read from a quiet ledger (or accept that changes made meanwhile show up as differences)."""
    audit, minted, transferred = Audit(), 0, 0
    balances: dict[str, int] = {}
    earned: dict[str, int] = {}
    keys_seen: set[str] = set()
    nonces: dict[str, int] = {}
    for entry_id, f in journal(client):
        audit.entries += 1
        try:
            amount = int(f["amount"])
            if not 0 < amount <= MAX_AMOUNT_MICRO:
                raise ValueError("amount out of range")
            if f["type"] == "mint":
                audit.mints += 1
                if f["key"] in keys_seen:
                    audit.problems.append(f"{entry_id}: mint key {f['key']} appears twice")
                keys_seen.add(f["key"])
                balances[f["to"]] = balances.get(f["to"], 0) + amount
                earned[f["to"]] = earned.get(f["to"], 0) + amount
                minted += amount
            elif f["type"] == "transfer":
                audit.transfers += 1
                sender, nonce = f["from"], int(f["nonce"])
                try:
                    identity.verify(sender, transfer_message(sender, f["to"], amount, nonce), f["signature"])
                except SignatureError:
                    audit.problems.append(f"{entry_id}: transfer signature does not verify")
                if nonce <= nonces.get(sender, -1):
                    audit.problems.append(f"{entry_id}: nonce {nonce} of {sender[:12]} is not increasing")
                nonces[sender] = nonce
                balances[sender] = balances.get(sender, 0) - amount
                if balances[sender] < 0:
                    audit.problems.append(f"{entry_id}: {sender[:12]} overdrawn")
                balances[f["to"]] = balances.get(f["to"], 0) + amount
                transferred += amount
            else:
                audit.problems.append(f"{entry_id}: unknown entry type {f['type']!r}")
        except (KeyError, ValueError) as exc:
            audit.problems.append(f"{entry_id}: malformed entry ({exc})")
    stored = {k: int(v) for k, v in client.hgetall(keys.LEDGER_BALANCES).items()}
    stored_earned = {k: int(v) for k, v in client.hgetall(keys.LEDGER_EARNED).items()}
    for name, replayed, kept in (("balance", balances, stored), ("earned", earned, stored_earned)):
        for account in sorted(set(replayed) | set(kept)):
            if replayed.get(account, 0) != kept.get(account, 0):
                audit.problems.append(f"{name} of {account[:12]}: journal says {replayed.get(account, 0)}, "
                                      f"Redis holds {kept.get(account, 0)}")
    stats = {k: int(v) for k, v in client.hgetall(keys.LEDGER_STATS).items()}
    supply = sum(stored.values())
    for name, expected, actual in (("supply", minted, stats.get("supply", 0)), ("minted", minted, stats.get("minted", 0)),
                                   ("sum of balances", minted, supply),
                                   ("transferred", transferred, stats.get("transferred", 0)),
                                   ("minted keys", audit.mints, client.scard(keys.LEDGER_MINTED))):
        if expected != actual:
            audit.problems.append(f"{name}: expected {expected}, found {actual}")
    return audit
