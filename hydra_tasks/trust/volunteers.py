"""Enrolled volunteers (scaffold: replaced by the enrolment module on merge)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import redis

from ..errors import IdentityError

VOLUNTEER_KEYS = "hydra:volunteer_keys"


def _record_key(name: str) -> str:
    return f"hydra:volunteer:{name}"


@dataclass(frozen=True)
class VolunteerRecord:
    name: str
    worker_id: str
    regions: tuple[str, ...]
    state: str
    public_key: str


def get(client: redis.Redis, name: str) -> VolunteerRecord | None:
    raw = client.hgetall(_record_key(name))
    if not raw:
        return None
    return VolunteerRecord(raw["name"], raw["worker_id"], tuple(r for r in raw.get("regions", "").split(",") if r),
                           raw.get("state", ""), raw.get("public_key", ""))


def by_key(client: redis.Redis, public_key: str) -> VolunteerRecord | None:
    name = client.hget(VOLUNTEER_KEYS, public_key)
    return get(client, name) if name else None


def bind_key(client: redis.Redis, name: str, join_secret: str, public_key: str) -> VolunteerRecord:
    record = get(client, name)
    raw = client.hgetall(_record_key(name))
    if record is None or raw.get("secret_sha256") != hashlib.sha256(join_secret.encode()).hexdigest():
        raise IdentityError("unknown volunteer or wrong join secret")
    client.hset(_record_key(name), mapping={"state": "active", "public_key": public_key, "secret_sha256": ""})
    client.hset(VOLUNTEER_KEYS, public_key, name)
    return get(client, name)  # type: ignore[return-value]


@dataclass(frozen=True)
class Credentials:
    name: str
    worker_id: str
    regions: tuple[str, ...]
    redis_url: str
    ca_pem: str | None
    join_secret: str

    @classmethod
    def load(cls, source: str) -> "Credentials":
        import json
        from pathlib import Path

        data = json.loads(Path(source).read_text())
        return cls(data["name"], data["worker_id"], tuple(data["regions"]), data["redis_url"], data.get("ca_pem"),
                   data["join_secret"])
