"""The token ledger: integer micro-tokens in Redis, changed only by Lua scripts, journaled.

* **Accounts** are volunteers' Ed25519 public keys (hex, :mod:`identity`), opened when a worker
  registers its key. Balances follow the key across machines.
* **Mints** happen when the control plane accepts a chunk, inside the script that merges it
  (``lua/merge.lua``), so a chunk is paid exactly when it is merged: once per ``{job}:{chunk}``
  idempotency key. A rejected or duplicate result is never merged, so never paid.
* **Transfers** are signed by the sender over ``{"action": "transfer", "from", "to", "amount",
  "nonce"}`` (canonical JSON). The nonce must exceed the sender's last one; sending the very same
  signed transfer again returns the original entry (safe retries) instead of paying twice.
* **Journal**: every change is appended to a Redis Stream with its reason; :mod:`.audit`
  replays it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

import redis
from nacl.signing import SigningKey

from .. import keys
from ..errors import InsufficientFunds, InvalidTransfer, NonceReused, UnknownAccount
from ..lua import TransferCode, scripts
from ..trust import identity
from .rewards import Reward
from ..settings import MICRO_PER_TOKEN, micro_tokens

MAX_AMOUNT_MICRO = 10**15          # 10^9 tokens: below 2^53, so Lua compares amounts exactly
MAX_NONCE = identity.MAX_NONCE
_TRANSFER_FIELDS = {"from", "to", "amount", "nonce", "signature"}


def tokens(micro: int) -> str:
    """Micro-tokens as an exact decimal string, e.g. 1500000 -> '1.500000'."""
    sign, micro = ("-", -micro) if micro < 0 else ("", micro)
    return f"{sign}{micro // MICRO_PER_TOKEN}.{micro % MICRO_PER_TOKEN:06d}"


def parse_tokens(text: str) -> int:
    """'1.5' -> 1500000 micro-tokens, exactly; InvalidTransfer if it is not a positive amount."""
    try:
        return check_amount(micro_tokens(text))
    except ValueError as exc:
        raise InvalidTransfer(f"The amount {text!r} {exc}.") from None


def check_amount(amount: object) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidTransfer("'amount' must be a whole number of micro-tokens (1 token = 1000000).")
    if not 0 < amount <= MAX_AMOUNT_MICRO:
        raise InvalidTransfer(f"'amount' must be between 1 and {MAX_AMOUNT_MICRO} micro-tokens, got {amount}.")
    return amount


# --- accounts and mints ----------------------------------------------------------------------
def open_account(client: redis.Redis, account: str, *, now: float | None = None) -> None:
    if not identity.is_public_key(account):
        raise InvalidTransfer("An account id is an Ed25519 public key: 64 lowercase hex digits.")
    client.hsetnx(keys.LEDGER_ACCOUNTS, account, repr(time.time() if now is None else now))


CHUNK_REWARD = "chunk accepted"  # the reason of a mint for an accepted chunk: it carries a signed report


def mint_json(account: str, reward: Reward, *, job_id: str, chunk_id: str, now: float,
              reason: str = CHUNK_REWARD, proof: Mapping[str, str] | None = None) -> str:
    """A mint for ``lua/merge.lua`` (or ``lua/mint.lua``); amounts as strings, since Lua would print big
    numbers as 1e+15. The idempotency key is ``{job}:{chunk}``. ``proof``: the signed result that
    earned it (trust/results.proof), kept in the journal entry."""
    day = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d")
    return json.dumps({"key": f"{job_id}:{chunk_id}", "account": account, "amount": str(reward.total),
                       "reason": reason, "ts": repr(now), "day": day,
                       "detail": json.dumps(reward.to_json(), sort_keys=True), **(proof or {})})


def mint(client: redis.Redis, account: str, reward: Reward, *, job_id: str, chunk_id: str, reason: str,
         now: float | None = None) -> bool:
    """Mint outside a merge (grants, tests), once per (job_id, chunk_id); False if already minted."""
    if not identity.is_public_key(account):
        raise InvalidTransfer("An account id is an Ed25519 public key: 64 lowercase hex digits.")
    check_amount(reward.total)
    return scripts(client).mint(mint_json(account, reward, job_id=job_id, chunk_id=chunk_id, reason=reason,
                                          now=time.time() if now is None else now))


# --- transfers -------------------------------------------------------------------------------
def transfer_message(sender: str, recipient: str, amount: int, nonce: int) -> dict[str, Any]:
    return {"action": "transfer", "from": sender, "to": recipient, "amount": amount, "nonce": nonce}


def signed_transfer(key: SigningKey, recipient: str, amount: int, nonce: int | None = None) -> dict[str, Any]:
    """The body of ``POST /api/transfer_tokens``. The nonce defaults to the clock in microseconds
    (below 2^53; a sender mixing this with small counters must keep them above its last nonce)."""
    nonce = identity.new_nonce() if nonce is None else nonce
    return identity.signed_request(key, transfer_message(identity.public_hex(key), recipient, amount, nonce))


@dataclass(frozen=True)
class TransferRequest:
    sender: str
    recipient: str
    amount: int
    nonce: int
    signature: str


def parse_transfer(raw: object) -> TransferRequest:
    """Validate a transfer body; InvalidTransfer (or SignatureError) says what is wrong."""
    if not isinstance(raw, Mapping):
        raise InvalidTransfer("The body must be a JSON object with from, to, amount, nonce, signature.")
    fields = set(raw) - {"action"}
    if fields != _TRANSFER_FIELDS:
        raise InvalidTransfer(f"A transfer has exactly the fields {sorted(_TRANSFER_FIELDS)} "
                              f"(missing: {sorted(_TRANSFER_FIELDS - fields) or 'none'}, "
                              f"unknown: {sorted(fields - _TRANSFER_FIELDS) or 'none'}).")
    if raw.get("action", "transfer") != "transfer":
        raise InvalidTransfer("'action' must be 'transfer'.")
    sender, recipient, nonce = raw["from"], raw["to"], raw["nonce"]
    for name, value in (("from", sender), ("to", recipient)):
        if not identity.is_public_key(value):
            raise InvalidTransfer(f"'{name}' must be an account id: an Ed25519 public key, 64 lowercase hex digits.")
    if sender == recipient:
        raise InvalidTransfer("'from' and 'to' are the same account.")
    amount = check_amount(raw["amount"])
    if not identity.is_nonce(nonce):
        raise InvalidTransfer(f"'nonce' must be a whole number from 0 to {MAX_NONCE}, above your last one.")
    signature = raw["signature"]
    identity.verify(sender, transfer_message(sender, recipient, amount, nonce), signature)
    return TransferRequest(sender, recipient, amount, nonce, str(signature))


def transfer(client: redis.Redis, raw: object, *, now: float | None = None) -> dict[str, Any]:
    """Verify and apply a signed transfer atomically; a LedgerError changes nothing."""
    req = parse_transfer(raw)
    code, detail = scripts(client).transfer(req.sender, req.recipient, req.amount, req.nonce, req.signature,
                                            now=time.time() if now is None else now, reason="transfer")
    if code is TransferCode.UNKNOWN_SENDER:
        raise UnknownAccount("The sending account does not exist; it is opened when a worker registers its key.")
    if code is TransferCode.UNKNOWN_RECIPIENT:
        raise UnknownAccount("The receiving account does not exist; the recipient must run a worker once first.")
    if code is TransferCode.STALE_NONCE:
        raise NonceReused("This nonce is not above the sender's last one (a replay or an old message); "
                          "sign the transfer again with a new, larger nonce.")
    if code is TransferCode.OVERDRAFT:
        raise InsufficientFunds(f"The balance ({tokens(int(detail))} tokens) is less than the amount "
                                f"({tokens(req.amount)}).")
    return {"entry": detail, "from": req.sender, "to": req.recipient, "amount_micro": req.amount,
            "amount": tokens(req.amount), "nonce": req.nonce, "repeated": code is TransferCode.REPEATED}


# --- reads -----------------------------------------------------------------------------------
def resolve_account(client: redis.Redis, who: str) -> str:
    """An account id, or the account of a registered worker id; UnknownAccount otherwise."""
    if identity.is_public_key(who) and client.hexists(keys.LEDGER_ACCOUNTS, who):
        return who
    account = client.hget(keys.worker(who), "public_key") if len(who) <= 200 else None
    if account and client.hexists(keys.LEDGER_ACCOUNTS, account):
        return str(account)
    raise UnknownAccount(f"No account or worker {who[:80]!r}.")


def balance(client: redis.Redis, who: str) -> dict[str, Any]:
    account = resolve_account(client, who)
    micro = int(client.hget(keys.LEDGER_BALANCES, account) or 0)
    earned = int(client.hget(keys.LEDGER_EARNED, account) or 0)
    return {"account": account, "balance_micro": micro, "balance": tokens(micro), "earned_micro": earned,
            "earned": tokens(earned)}


def top_of(client: redis.Redis, key: str, limit: int) -> list[tuple[str, int]]:
    """The ``limit`` highest-scored members of the sorted set ``key`` (integer scores), ties by name:
    O(log n + limit) however many members it has. A tie across the cut is settled by name too."""
    if limit <= 0:
        return []
    head = client.zrevrange(key, 0, limit - 1, withscores=True)
    if len(head) == limit:  # members tied with the last one may sort before it by name
        cut = head[-1][1]
        above = client.zrevrangebyscore(key, "+inf", f"({cut!r}", withscores=True)
        head = above + client.zrangebyscore(key, cut, cut, start=0, num=limit - len(above), withscores=True)
    return sorted(((m, int(score)) for m, score in head), key=lambda r: (-r[1], r[0]))[:limit]


def _ranked(client: redis.Redis, key: str, limit: int) -> list[dict[str, Any]]:
    return [{"rank": i + 1, "account": account, "micro": micro, "tokens": tokens(micro)}
            for i, (account, micro) in enumerate(top_of(client, key, limit))]


def leaderboard(client: redis.Redis, limit: int = 10) -> dict[str, Any]:
    """Top accounts by balance and by tokens ever earned, from the sorted sets every mint, transfer and
    reversal keeps (``hydra:ledger:rank:*``): O(log accounts + limit)."""
    return {"by_balance": _ranked(client, keys.LEDGER_RANK_BALANCE, limit),
            "by_earned": _ranked(client, keys.LEDGER_RANK_EARNED, limit)}


def token_metrics(client: redis.Redis) -> dict[str, Any]:
    stats = {k: int(v) for k, v in client.hgetall(keys.LEDGER_STATS).items()}
    daily = {day: int(v) for day, v in sorted(client.hgetall(keys.LEDGER_DAILY).items())}
    return {"supply_micro": stats.get("supply", 0), "supply": tokens(stats.get("supply", 0)),
            "minted_micro": stats.get("minted", 0), "transferred_micro": stats.get("transferred", 0),
            "reversed_micro": stats.get("reversed", 0), "reversals": stats.get("reversals", 0),
            "mints": stats.get("mints", 0), "transfers": stats.get("transfers", 0),
            "accounts": client.hlen(keys.LEDGER_ACCOUNTS), "holders": client.zcount(keys.LEDGER_RANK_BALANCE, "(0", "+inf"),
            "minted_per_day_micro": daily}
