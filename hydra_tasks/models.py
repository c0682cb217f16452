"""Value objects shared by the control plane and the volunteers.

They travel as JSON (never pickle): every class has ``to_json()`` / ``from_json()`` that
produce and accept plain dicts, and reject anything malformed with a HydraError.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ResultRejected


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class JobKind(enum.StrEnum):
    PI = "pi"
    MANDELBROT = "mandelbrot"


class WorkerState(enum.StrEnum):
    ONLINE = "online"
    PAUSED = "paused"    # alive, but not taking work (e.g. on battery)
    OFFLINE = "offline"


@dataclass(frozen=True)
class JobSpec:
    """A validated job request. ``params`` is kind-specific and already normalised."""

    kind: JobKind
    params: Mapping[str, Any]
    priority: int = 5
    deadline_ts: float | None = None
    confidential: bool = False  # run only on workers whose attestation was verified (trust/attestation.py)
    delay_weight: float = 0.0   # gCO2/kWh an hour of waiting is worth to the owner (scheduling/shifting.py)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "params": dict(self.params), "priority": self.priority,
                "deadline_ts": self.deadline_ts, "confidential": self.confidential,
                "delay_weight": self.delay_weight}


@dataclass(frozen=True)
class ChunkSpec:
    """One unit of work: a range of π samples or a Mandelbrot tile."""

    job_id: str
    chunk_id: str
    kind: JobKind
    params: Mapping[str, Any]
    units: int  # samples (π) or pixels (Mandelbrot): what progress counts

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "chunk_id": self.chunk_id, "kind": self.kind.value,
                "params": dict(self.params), "units": self.units}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ChunkSpec":
        try:
            return cls(job_id=str(data["job_id"]), chunk_id=str(data["chunk_id"]), kind=JobKind(data["kind"]),
                       params=dict(data["params"]), units=int(data["units"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ResultRejected(f"Malformed chunk spec ({exc!r}); expected job_id, chunk_id, kind, params, units.") from None


def payload_digest(job_id: str, chunk_id: str, payload: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical JSON of what a volunteer claims to have computed."""
    canon = json.dumps({"job_id": job_id, "chunk_id": chunk_id, "payload": payload},
                       sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


@dataclass(frozen=True)
class Finalized:
    """A finished job's result, plus large blobs (base64 text) stored under their own keys."""

    result: dict[str, Any]
    blobs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ChunkResult:
    """What a volunteer sends back to the control plane for one chunk."""

    job_id: str
    chunk_id: str
    worker_id: str
    region: str
    attempt: int
    elapsed_s: float
    cpu_s: float
    payload: Mapping[str, Any]
    digest: str
    error: str | None = None
    signature: str | None = field(default=None)
    energy_j: float | None = None  # measured (RAPL) by the volunteer, if its OS exposes it

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "chunk_id": self.chunk_id, "worker_id": self.worker_id,
                "region": self.region, "attempt": self.attempt, "elapsed_s": self.elapsed_s,
                "cpu_s": self.cpu_s, "payload": dict(self.payload), "digest": self.digest,
                "error": self.error, "signature": self.signature, "energy_j": self.energy_j}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ChunkResult":
        try:
            result = cls(
                job_id=str(data["job_id"]), chunk_id=str(data["chunk_id"]), worker_id=str(data["worker_id"]),
                region=str(data["region"]), attempt=int(data["attempt"]), elapsed_s=float(data["elapsed_s"]),
                cpu_s=float(data.get("cpu_s", 0.0)), payload=dict(data["payload"]), digest=str(data["digest"]),
                error=None if data.get("error") is None else str(data["error"]),
                signature=None if data.get("signature") is None else str(data["signature"]),
                energy_j=None if data.get("energy_j") is None else float(data["energy_j"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ResultRejected(f"Malformed chunk result ({exc!r}).") from None
        if not (0.0 <= result.elapsed_s < 86_400 * 7):
            raise ResultRejected(f"Chunk result has an impossible elapsed_s={result.elapsed_s}.")
        return result

    def digest_ok(self) -> bool:
        return self.error is not None or payload_digest(self.job_id, self.chunk_id, self.payload) == self.digest
