"""One worker in detail, for its dashboard page (``/workers/<id>``, ``GET /api/workers/<id>``):
its registry record, how hard its results are audited now, and its most recent merged chunks
(from its results log, ``hydra:worker:{id}:results``, newest first)."""

from __future__ import annotations

import json
import re
from typing import Any

import redis

from .. import keys
from ..ledger.book import tokens
from ..models import JobKind
from ..trust import reputation
from .registry import WorkerInfo, get_worker, pi_blocks

#: What a worker id may look like in a URL: a Celery node name (``name@host``), at most 200 characters.
WORKER_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,199}")
RECENT_CHUNKS, MAX_RECENT_CHUNKS = 20, 200


def is_worker_id(text: str) -> bool:
    return WORKER_ID_RE.fullmatch(text) is not None


def audit_status(worker: WorkerInfo) -> dict[str, Any]:
    """How its results are audited now (trust/reputation.POLICY): ``level`` is quarantined,
    probation (fewer than 10 clean audits), established (10+), trusted (50+) or veteran (200+)."""
    clean = worker.audits_passed
    picks_pi = reputation.picks(JobKind.PI, clean)
    level = ("quarantined" if worker.quarantined else "veteran" if clean >= 200 else "trusted" if clean >= 50
             else "established" if clean >= 10 else "probation")
    if worker.quarantined:
        text = f"quarantined: {worker.quarantined} (no work until an operator lifts it)"
    else:
        text = (f"{level}: {clean} clean audit(s) in a row; {picks_pi} of {pi_blocks()} π blocks and "
                f"{reputation.picks(JobKind.MANDELBROT, clean)} Mandelbrot pixels (besides one row) of each "
                "result are recomputed")
    return {"level": level, "clean_audits": clean, "failed_audits": worker.audits_failed,
            "pi_blocks_checked": picks_pi, "pi_blocks": pi_blocks(),
            "mandelbrot_pixels_checked": reputation.picks(JobKind.MANDELBROT, clean), "text": text}


def recent_chunks(client: redis.Redis, worker_id: str, limit: int = RECENT_CHUNKS) -> list[dict[str, Any]]:
    """Its newest merged chunks, newest first (at most ``limit``): ``{job, chunk, amount_micro, tokens,
    account, job_exists}``; a chunk a catch revoked is no longer in the log."""
    raw = client.lrange(keys.worker_results(worker_id), -max(1, min(limit, MAX_RECENT_CHUNKS)), -1)
    parsed: list[tuple[str, str, int, str]] = []
    for line in reversed(raw):
        try:
            entry = json.loads(line)
            parsed.append((str(entry["job"]), str(entry["chunk"]), int(entry.get("amount") or 0),
                           str(entry.get("account", ""))))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    if not parsed:
        return []
    pipe = client.pipeline(transaction=False)
    for job_id, _, _, _ in parsed:
        pipe.exists(keys.job(job_id))
    return [{"job": job_id, "chunk": chunk, "amount_micro": micro, "tokens": tokens(micro), "account": account,
             "job_exists": bool(exists)}
            for (job_id, chunk, micro, account), exists in zip(parsed, pipe.execute())]


def worker_details(client: redis.Redis, worker_id: str, *, recent: int = RECENT_CHUNKS) -> dict[str, Any] | None:
    """The worker as ``WorkerInfo.to_json`` plus ``audit_status``, ``results_logged`` (merged results in
    its log) and ``recent_chunks``; None if no such worker is registered."""
    worker = get_worker(client, worker_id)
    if worker is None:
        return None
    return {**worker.to_json(), "audit_status": audit_status(worker),
            "results_logged": client.llen(keys.worker_results(worker_id)),
            "recent_chunks": recent_chunks(client, worker_id, recent)}
