"""A job as the CLI, the webapp and the metrics read it: a typed, frozen record built from the
job hash (fields documented in :mod:`hydra_tasks.keys`), and its JSON form for the HTTP API."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from ..grid import accounting
from ..models import JobKind, JobState

#: Integer counters of the job hash, in the order the API has always listed them.
COUNTERS = ("chunks_total", "chunks_done", "units_total", "units_done", "dispatched", "redispatched",
            "duplicates", "rejections", "failures", "expiries", "declines", "backups", "hits", "iterations",
            "recomputed", "suspect", "reopened")


@dataclass(frozen=True)
class WorkerShare:
    """What one worker did for a job (the job's ``workers`` hash)."""

    chunks: int = 0
    units: int = 0
    elapsed_ms: int = 0
    last_ms: int = 0


@dataclass(frozen=True)
class JobView:
    id: str
    kind: JobKind
    state: JobState
    priority: int
    params: Mapping[str, Any]
    deadline_ts: float | None
    delay_weight: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    chunks_total: int = 0
    chunks_done: int = 0
    units_total: int = 0
    units_done: int = 0
    dispatched: int = 0
    redispatched: int = 0
    duplicates: int = 0
    rejections: int = 0
    failures: int = 0
    expiries: int = 0
    declines: int = 0
    backups: int = 0
    hits: int = 0
    iterations: int = 0
    recomputed: int = 0     # results taken back because their worker was caught cheating, and recomputed
    suspect: int = 0        # finished: results in it from a worker caught cheating later (re-open to recompute)
    reopened: int = 0       # times an operator re-opened it
    result: Mapping[str, Any] | None = None
    error: str | None = None
    sustainability: Mapping[str, float] = field(default_factory=dict)
    carbon_threshold: float | None = None  # the dirtiest power (gCO2/kWh) a deferrable job may use now
    workers: Mapping[str, WorkerShare] = field(default_factory=dict)
    confidential: bool = False     # runs only on workers whose attestation was verified
    waiting: str | None = None     # why a confidential job gets no worker now

    @property
    def given_params(self) -> dict[str, Any]:
        """The parameters as the user gave them (a Mandelbrot job's centre and span, not the bounds
        derived from them), for display."""
        if self.kind is JobKind.MANDELBROT:
            from .mandelbrot import given_params

            return given_params(self.params)
        return dict(self.params)

    @property
    def progress(self) -> float:
        return self.units_done / self.units_total if self.units_total else 0.0

    @property
    def wall_s(self) -> float | None:
        return self.finished_at - self.started_at if self.finished_at and self.started_at else None

    @property
    def is_final(self) -> bool:
        return self.state.is_final

    @classmethod
    def from_hash(cls, raw: Mapping[str, str], workers_raw: Mapping[str, str] | None = None) -> "JobView":
        """From the job hash and, optionally, its per-worker hash (``keys.job_workers``)."""
        spec = json.loads(raw["spec"])
        shares: dict[str, dict[str, int]] = {}
        for name, value in (workers_raw or {}).items():
            worker_id, _, metric = name.rpartition("|")
            if metric in WorkerShare.__dataclass_fields__:
                shares.setdefault(worker_id, {})[metric] = int(value)
        threshold = raw.get("carbon_threshold", "inf")
        return cls(
            id=raw["id"], kind=JobKind(raw["kind"]), state=JobState(raw["state"]), priority=int(raw["priority"]),
            params=MappingProxyType(spec["params"]), deadline_ts=spec.get("deadline_ts"),
            delay_weight=float(spec.get("delay_weight", 0.0)), created_at=_seconds(raw, "created_at") or 0.0, started_at=_seconds(raw, "started_at"),
            finished_at=_seconds(raw, "finished_at"), updated_at=_seconds(raw, "updated_at") or 0.0,
            **{c: int(raw.get(c, 0) or 0) for c in COUNTERS},
            result=MappingProxyType(json.loads(raw["result"])) if raw.get("result") else None,
            error=raw.get("error") or None,
            sustainability=MappingProxyType(accounting.totals(raw)),
            carbon_threshold=float(threshold) if threshold not in ("inf", "") else None,
            workers=MappingProxyType({w: WorkerShare(**m) for w, m in shares.items()}),
            confidential=bool(spec.get("confidential", False)), waiting=raw.get("waiting") or None,
        )

    def to_json(self) -> dict[str, Any]:
        """The job as the HTTP API and ``hydra status JOB`` show it."""
        return {
            "id": self.id, "kind": self.kind.value, "state": self.state.value, "priority": self.priority,
            "params": _plain(self.params), "deadline_ts": self.deadline_ts, "delay_weight": self.delay_weight,
            "created_at": self.created_at,
            "started_at": self.started_at, "finished_at": self.finished_at, "updated_at": self.updated_at,
            "progress": self.progress, "wall_s": self.wall_s, **{c: getattr(self, c) for c in COUNTERS},
            "result": _plain(self.result), "error": self.error, "sustainability": dict(self.sustainability),
            "carbon_threshold": self.carbon_threshold,
            "workers": {w: asdict(s) for w, s in self.workers.items()},
            "confidential": self.confidential, "waiting": self.waiting,
        }


def _seconds(raw: Mapping[str, str], name: str) -> float | None:
    value = raw.get(name)
    return float(value) if value not in (None, "") and float(value) else None


def _plain(value: Any) -> Any:
    """Mapping proxies back to plain dicts (for JSON)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
