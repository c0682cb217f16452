"""Audit: replay the ledger's journal and compare it with every balance and total.

``hydra ledger verify`` runs :func:`verify`: it checks the journal's hash chain, every transfer's
signature and nonce order, re-adds every entry, and compares the result with every balance, every
earned total, the supply (= minted - reversed), the transferred and reversed totals and the number
of mint keys. A reversal (trust/consequences.py: a worker caught cheating loses what its results
earned) must take back exactly one standing mint, to the same account and of the same amount; it
frees the mint's key for the chunk's recompute. Given the
control plane's signed checkpoints (:mod:`.chain`), it also checks that the journal still holds
every checkpointed entry, unchanged: a flushed, truncated or rewritten journal fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import redis

from .. import keys
from ..errors import SignatureError
from ..trust import identity
from .book import CHUNK_REWARD, MAX_AMOUNT_MICRO, transfer_message
from .chain import Checkpoint, walk


@dataclass
class Audit:
    entries: int = 0
    mints: int = 0
    transfers: int = 0
    reversals: int = 0
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


def verify(client: redis.Redis, *, checkpoints: Sequence[Checkpoint] = (),
           control_key: str | None = None) -> Audit:
    """Replay the journal and compare it with every balance and total (see the module docstring).
    Read from a quiet ledger (or accept that changes made meanwhile show up as differences).
    ``checkpoints`` are checked against the journal; ``control_key`` (hex) must have signed them."""
    audit, minted, transferred, reversed_ = Audit(), 0, 0, 0
    balances: dict[str, int] = {}
    earned: dict[str, int] = {}
    standing: dict[str, tuple[str, int]] = {}  # mint key -> (account, amount) of its mint, until reversed
    nonces: dict[str, int] = {}
    pinned = {c.length for c in checkpoints}
    seen_at: dict[int, tuple[str, int, int]] = {0: ("", 0, 0)}  # position -> (hash, minted, transferred)
    head = ""
    for position, entry_id, f, broken in walk(journal(client)):
        audit.entries += 1
        if broken:
            audit.problems.append(f"{entry_id}: the journal's hash chain breaks here: {broken}")
        head = f.get("hash", head)
        try:
            amount = int(f["amount"])
            if not 0 < amount <= MAX_AMOUNT_MICRO:
                raise ValueError("amount out of range")
            if f["type"] == "mint":
                audit.mints += 1
                if f["key"] in standing:
                    audit.problems.append(f"{entry_id}: mint key {f['key']} appears twice")
                standing[f["key"]] = (f["to"], amount)
                if f["reason"] == CHUNK_REWARD and "hash" in f:  # chained entries: the proof is required
                    problem = proof_problem(f)
                    if problem:
                        audit.problems.append(f"{entry_id}: mint for {f['key']}: {problem}")
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
            elif f["type"] == "reversal":
                audit.reversals += 1
                if standing.pop(f["key"], None) != (f["from"], amount):
                    audit.problems.append(f"{entry_id}: reversal of {f['key']} takes back no standing mint of "
                                          f"{amount} to {f['from'][:12]}")
                balances[f["from"]] = balances.get(f["from"], 0) - amount
                earned[f["from"]] = earned.get(f["from"], 0) - amount
                reversed_ += amount
            else:
                audit.problems.append(f"{entry_id}: unknown entry type {f['type']!r}")
        except (KeyError, ValueError) as exc:
            audit.problems.append(f"{entry_id}: malformed entry ({exc})")
        if position in pinned:
            seen_at[position] = (f.get("hash", ""), minted, transferred)
    _check_head(client, head, audit)
    _check_checkpoints(checkpoints, control_key, seen_at, audit)
    stored = {k: int(v) for k, v in client.hgetall(keys.LEDGER_BALANCES).items()}
    stored_earned = {k: int(v) for k, v in client.hgetall(keys.LEDGER_EARNED).items()}
    for name, replayed, kept in (("balance", balances, stored), ("earned", earned, stored_earned)):
        for account in sorted(set(replayed) | set(kept)):
            if replayed.get(account, 0) != kept.get(account, 0):
                audit.problems.append(f"{name} of {account[:12]}: journal says {replayed.get(account, 0)}, "
                                      f"Redis holds {kept.get(account, 0)}")
    _check_rankings(client, stored, stored_earned, audit)
    stats = {k: int(v) for k, v in client.hgetall(keys.LEDGER_STATS).items()}
    supply = sum(stored.values())
    for name, expected, actual in (("supply", minted - reversed_, stats.get("supply", 0)),
                                   ("minted", minted, stats.get("minted", 0)),
                                   ("sum of balances", minted - reversed_, supply),
                                   ("transferred", transferred, stats.get("transferred", 0)),
                                   ("reversed", reversed_, stats.get("reversed", 0)),
                                   # FINISH compacts a finished job's mint keys (counted in keys_compacted)
                                   ("minted keys", len(standing),
                                    client.scard(keys.LEDGER_MINTED) + stats.get("keys_compacted", 0))):
        if expected != actual:
            audit.problems.append(f"{name}: expected {expected}, found {actual}")
    return audit


def _check_rankings(client: redis.Redis, balances: dict[str, int], earned: dict[str, int], audit: Audit) -> None:
    """The leaderboard's sorted sets and the teams' totals must hold what the hashes hold."""
    for name, kept, key in (("balance", balances, keys.LEDGER_RANK_BALANCE),
                            ("earned", earned, keys.LEDGER_RANK_EARNED)):
        ranked = {m: int(s) for m, s in client.zrange(key, 0, -1, withscores=True)}
        wrong = sorted(a for a in set(kept) | set(ranked) if kept.get(a, 0) != ranked.get(a, 0))
        if wrong:
            audit.problems.append(f"the leaderboard by {name} disagrees with the ledger for {len(wrong)} account(s), "
                                  f"e.g. {wrong[0][:12]}: {ranked.get(wrong[0], 0)} against {kept.get(wrong[0], 0)}")
    team_of = client.hgetall(keys.PROFILE_TEAMS)
    totals: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for account, team in team_of.items():
        totals[team] = totals.get(team, 0) + earned.get(account, 0)
        sizes[team] = sizes.get(team, 0) + 1
    ranked_teams = {t: int(s) for t, s in client.zrange(keys.TEAMS_EARNED, 0, -1, withscores=True)}
    members = {t: int(n) for t, n in client.hgetall(keys.TEAMS_MEMBERS).items()}
    for team in sorted(set(totals) | set(ranked_teams) | set(members)):
        if (totals.get(team, 0), sizes.get(team, 0)) != (ranked_teams.get(team, 0), members.get(team, 0)):
            audit.problems.append(f"team {team!r}: its members earned {totals.get(team, 0)} in {sizes.get(team, 0)} "
                                  f"account(s); the team leaderboard holds {ranked_teams.get(team, 0)} in "
                                  f"{members.get(team, 0)}")


def _check_head(client: redis.Redis, head: str, audit: Audit) -> None:
    """The chain's head, kept beside the journal, must be the last entry's hash."""
    stored = client.hget(keys.LEDGER_HEAD, "hash") or ""
    if stored != head:
        audit.problems.append(f"the journal ends at hash {head[:12] or '(none)'} but its head says "
                              f"{stored[:12] or '(none)'}: entries were removed from its end")


def _check_checkpoints(checkpoints: Sequence[Checkpoint], control_key: str | None,
                       seen_at: dict[int, tuple[str, int, int]], audit: Audit) -> None:
    for cp in checkpoints:
        when = f"the checkpoint of {cp.at:.0f} ({cp.length} entries)"
        try:
            cp.verify(control_key)
        except SignatureError as exc:
            audit.problems.append(f"{when} is not signed by the control plane: {exc}")
            continue
        if cp.length > audit.entries:
            audit.problems.append(f"{when}: the journal now has only {audit.entries} entries; entries were "
                                  "erased (FLUSHALL, XTRIM or a restore from an old backup)")
            continue
        head, minted, transferred = seen_at.get(cp.length, ("", -1, -1))
        if head != cp.head:
            audit.problems.append(f"{when}: entry {cp.length} is not the one checkpointed; the journal was "
                                  "rewritten before it")
        elif (minted, transferred) != (cp.minted, cp.transferred):
            audit.problems.append(f"{when}: minted/transferred up to it were {cp.minted}/{cp.transferred}; "
                                  f"the journal now says {minted}/{transferred}")


def proof_problem(entry: Mapping[str, str]) -> str | None:
    """Why a chunk reward's signed report does not prove it was earned by the key it paid (None: it does)."""
    if not entry.get("result") or not entry.get("result_signature"):
        return "it names no signed result"
    try:
        claims = json.loads(entry["result"])
    except ValueError:
        return "its signed result is not JSON"
    if not isinstance(claims, dict) or f"{claims.get('job_id')}:{claims.get('chunk_id')}" != entry["key"] \
            or claims.get("action") != "chunk_result" or claims.get("error") is not None:
        return "its signed result is for another chunk, or not an accepted result"
    try:
        identity.verify(entry["to"], claims, entry["result_signature"])
    except SignatureError:
        return "the signed result is not signed by the account it paid"
    return None
