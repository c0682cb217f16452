"""Display names and teams for token accounts, set by the volunteer with a signed request.

A volunteer (the holder of an account's Ed25519 key) signs ``{"action": "profile", "account",
"display_name", "team", "nonce"}`` (canonical JSON, :func:`identity.sign`, the scheme transfers use)
and sends it to ``POST /api/profile``, or runs ``hydra profile set --name ... --team ...``. The nonce
must exceed the account's last profile nonce, so a captured request cannot be replayed over a newer
one (the CLI uses the clock in microseconds). Only an existing account (opened when its worker
registered) may have a profile.

Names and teams are shown on the public leaderboard, so they are checked: trimmed, NFC-normalised,
at most :data:`MAX_NAME` / :data:`MAX_TEAM` characters, and printable: no control, format (e.g. bidi
overrides, zero-width characters), private-use, unassigned or line/paragraph-separator characters.
An empty name means "no name" (the leaderboard shows the key's first 16 hex digits) and an empty
team "no team". Names are not unique (two volunteers may both be "Alice"): the account id is what
identifies a volunteer; teams are grouped by exact (NFC) spelling.

Stored in ``hydra:profiles`` (account -> JSON ``{display_name, team, nonce, updated_at}``) and
``hydra:profile_teams`` (account -> team, for accounts in a team), written together in one
WATCH/MULTI transaction. The team leaderboard ranks teams by the micro-tokens their members ever
earned (``hydra:ledger:earned``; transfers between volunteers do not move a team up or down).
"""

from __future__ import annotations

import json
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import redis
from nacl.signing import SigningKey

from .. import keys
from ..errors import InvalidProfile, NonceReused, UnknownAccount
from ..trust import identity
from ..lua import scripts
from .book import tokens, top_of

MAX_NAME, MAX_TEAM = 40, 40
ACTION = "profile"
_FIELDS = {"account", "display_name", "team", "nonce", "signature"}
# Unicode categories refused in names: controls, format characters (bidi overrides, zero-width joiners),
# surrogates, private use, unassigned, and line and paragraph separators.
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


@dataclass(frozen=True)
class Profile:
    account: str
    display_name: str
    team: str
    nonce: int
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        return {"account": self.account, "display_name": self.display_name, "team": self.team, "nonce": self.nonce,
                "updated_at": self.updated_at}


def profile_message(account: str, display_name: str, team: str, nonce: int) -> dict[str, Any]:
    return {"action": ACTION, "account": account, "display_name": display_name, "team": team, "nonce": nonce}


def signed_profile(key: SigningKey, display_name: str, team: str, nonce: int | None = None) -> dict[str, Any]:
    """The body of ``POST /api/profile``, signed with the account's key."""
    nonce = identity.new_nonce() if nonce is None else nonce
    return identity.signed_request(key, profile_message(identity.public_hex(key), display_name, team, nonce))


def clean_text(value: object, field: str, limit: int) -> str:
    """``value`` trimmed and NFC-normalised; InvalidProfile saying what to fix if it is not a short
    printable string."""
    if not isinstance(value, str):
        raise InvalidProfile(f"'{field}' must be a string (\"\" for none).")
    text = unicodedata.normalize("NFC", value).strip()
    if len(text) > limit:
        raise InvalidProfile(f"'{field}' is {len(text)} characters long; at most {limit} are allowed.")
    bad = next((c for c in text if unicodedata.category(c) in _REFUSED_CATEGORIES), None)
    if bad is not None:
        raise InvalidProfile(f"'{field}' contains the character U+{ord(bad):04X} "
                             f"({unicodedata.name(bad, 'unnamed')}), which cannot be shown; use printable "
                             "characters only (letters, digits, punctuation, symbols, spaces).")
    return text


@dataclass(frozen=True)
class ProfileRequest:
    account: str
    display_name: str
    team: str
    nonce: int


def parse_profile(raw: object) -> ProfileRequest:
    """Validate a signed profile body; InvalidProfile or SignatureError says what is wrong. The
    signature covers the fields exactly as sent (before trimming)."""
    if not isinstance(raw, Mapping):
        raise InvalidProfile(f"The body must be a JSON object with {sorted(_FIELDS)}.")
    fields = set(raw) - {"action"}
    if fields != _FIELDS:
        raise InvalidProfile(f"A profile request has exactly the fields {sorted(_FIELDS)} "
                             f"(missing: {sorted(_FIELDS - fields) or 'none'}, "
                             f"unknown: {sorted(fields - _FIELDS) or 'none'}).")
    if raw.get("action", ACTION) != ACTION:
        raise InvalidProfile(f"'action' must be '{ACTION}'.")
    account, nonce = raw["account"], raw["nonce"]
    if not identity.is_public_key(account):
        raise InvalidProfile("'account' must be an account id: an Ed25519 public key, 64 lowercase hex digits.")
    if not identity.is_nonce(nonce):
        raise InvalidProfile(f"'nonce' must be a whole number from 0 to {identity.MAX_NONCE}, above your last one.")
    name = clean_text(raw["display_name"], "display_name", MAX_NAME)
    team = clean_text(raw["team"], "team", MAX_TEAM)
    identity.verify(account, profile_message(account, raw["display_name"], raw["team"], nonce), raw["signature"])
    return ProfileRequest(account, name, team, nonce)


def set_profile(client: redis.Redis, raw: object, *, now: float | None = None) -> Profile:
    """Verify and store a signed profile request, atomically; InvalidProfile, SignatureError,
    UnknownAccount or NonceReused change nothing."""
    req = parse_profile(raw)
    now = time.time() if now is None else now
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(keys.PROFILES)
                if not pipe.hexists(keys.LEDGER_ACCOUNTS, req.account):
                    raise UnknownAccount("This account does not exist; it is opened when a worker registers its key "
                                         "(run a worker once first).")
                old = pipe.hget(keys.PROFILES, req.account)
                if old is not None and req.nonce <= int(json.loads(old)["nonce"]):
                    raise NonceReused("This nonce is not above the account's last profile nonce (a replay or an old "
                                      "message); sign the request again with a new, larger nonce.")
                profile = Profile(req.account, req.display_name, req.team, req.nonce, now)
                pipe.multi()
                pipe.hset(keys.PROFILES, req.account, json.dumps(profile.to_json(), ensure_ascii=False))
                scripts(client).set_team(req.account, req.team, pipe=pipe)
                pipe.execute()
                return profile
            except redis.WatchError:
                continue


def get_profile(client: redis.Redis, account: str) -> Profile | None:
    raw = client.hget(keys.PROFILES, account) if identity.is_public_key(account) else None
    return _parse(account, raw)


def _parse(account: str, raw: str | None) -> Profile | None:
    if raw is None:
        return None
    data = json.loads(raw)
    return Profile(account, str(data.get("display_name", "")), str(data.get("team", "")), int(data.get("nonce", 0)),
                   float(data.get("updated_at", 0.0)))


def short_account(account: str) -> str:
    """What the leaderboard shows for an account without a display name."""
    return account[:16] + "…"


def annotate(client: redis.Redis, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leaderboard rows (each with ``account``) with ``display_name`` (or ``None``), ``team`` (or
    ``None``) and ``shown`` (the display name, else :func:`short_account`); one HMGET."""
    rows = list(rows)
    if not rows:
        return rows
    found = client.hmget(keys.PROFILES, [row["account"] for row in rows])
    out = []
    for row, raw in zip(rows, found):
        profile = _parse(row["account"], raw)
        name = profile.display_name if profile and profile.display_name else None
        team = profile.team if profile and profile.team else None
        out.append({**row, "display_name": name, "team": team, "shown": name or short_account(row["account"])})
    return out


def team_leaderboard(client: redis.Redis, limit: int = 10) -> list[dict[str, Any]]:
    """Teams by the micro-tokens their members ever earned, most first (ties by name):
    ``[{rank, team, members, micro, tokens}]``. Read from the teams' sorted set (kept by every mint,
    reversal and team change): O(log teams + limit), whatever the number of accounts."""
    rows = top_of(client, keys.TEAMS_EARNED, limit)
    counts = client.hmget(keys.TEAMS_MEMBERS, [team for team, _ in rows]) if rows else []
    return [{"rank": i + 1, "team": team, "members": int(n or 0), "micro": micro, "tokens": tokens(micro)}
            for i, ((team, micro), n) in enumerate(zip(rows, counts))]
