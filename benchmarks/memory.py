"""What a finished job leaves in Redis (issue 15, item 3): bytes retained per finished job and per chunk,
and the AOF file against the live data.

It starts a real local stack (embedded Redis with ``appendfsync always``, control and intake workers, two
region workers) and runs, to the end, SMALL_JOBS small π jobs, one π job of BIG_CHUNKS chunks and one
Mandelbrot job. Then it measures every key with ``MEMORY USAGE`` (the server's own accounting, key and
value with their overhead):

* per finished job: the bytes of the job's own keys (``hydra:job:{id}*``), the Mandelbrot image and counts
  blobs listed apart (they are the result);
* per chunk: what grows with chunks outside the job (the mint idempotency keys), and what the job keeps
  per chunk (the big job less a small one, over the chunks between them). The journal (the ledger's
  audit trail) and the workers' results logs (what a catch revokes, capped per worker) are per chunk by
  design and printed apart;
* the AOF: its size after the run, after ``BGREWRITEAOF``, and after deleting every finished job and
  rewriting again, against the live dataset (``used_memory_dataset``).

Targets: at most 2,048 bytes retained per finished small job (excluding the Mandelbrot image) and no
per-chunk residue (at most 1 byte per chunk, job keys and mint keys together). The chunk log's detail
(HYDRA_JOB_DETAIL_S) is set to 2 s and waited out. Run: `.venv/bin/python benchmarks/memory.py`;
`--json FILE` writes the figures. The same script run on a checkout from before the compaction (its own
hydra_tasks first on PYTHONPATH) gives the "before" figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import hydra_tasks  # noqa: E402
from hydra_tasks import keys  # noqa: E402
from hydra_tasks.celery_app import create_app  # noqa: E402
from hydra_tasks.jobs import store  # noqa: E402
from hydra_tasks.jobs.submit import submit_job  # noqa: E402
from hydra_tasks.settings import Settings  # noqa: E402
from support import running_stack, wait_for_job  # noqa: E402

SMALL_JOBS = 20
SMALL_CHUNKS = 20
BIG_CHUNKS = 2_000
CHUNK_SAMPLES = 1_000
DETAIL_S = 2.0
TARGET_JOB_BYTES = 2_048
TARGET_CHUNK_BYTES = 1.0


def usage(r: Any, key: str) -> int:
    return int(r.memory_usage(key, samples=0) or 0)


def job_bytes(r: Any, job_id: str) -> tuple[int, int, list[str]]:
    """(bytes of the job's keys other than its result blobs, bytes of its blobs, the keys)."""
    blobs = {keys.job_image(job_id), keys.job_counts(job_id)}
    found = sorted(r.scan_iter(match=f"{keys.job(job_id)}*", count=1000))
    own = sum(usage(r, k) for k in found if k not in blobs)
    return own, sum(usage(r, k) for k in found if k in blobs), found


def pattern_bytes(r: Any, pattern: str) -> int:
    return sum(usage(r, k) for k in r.scan_iter(match=pattern, count=1000))


def aof_bytes(r: Any) -> int:
    """The AOF on disk: Redis 7's appendonlydir (base + increments), or Redis 6's single file."""
    folder = Path(r.config_get("dir")["dir"])
    name = r.config_get("appenddirname").get("appenddirname")
    if name and (folder / name).is_dir():
        return sum(f.stat().st_size for f in (folder / name).iterdir())
    return sum(f.stat().st_size for f in folder.glob("appendonly*") if f.is_file())


def rewrite(r: Any) -> None:
    r.bgrewriteaof()
    deadline = time.time() + 60
    time.sleep(0.2)
    while time.time() < deadline:
        info = r.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            return
        time.sleep(0.1)
    raise TimeoutError("BGREWRITEAOF did not finish in 60 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    overrides: dict[str, Any] = {"pi_chunk_samples": CHUNK_SAMPLES, "adaptive": False, "tile_px": 32}
    compacting = "job_detail_s" in Settings.__dataclass_fields__
    if compacting:
        overrides["job_detail_s"] = DETAIL_S
    print(f"code: {Path(hydra_tasks.__file__).parent}  ({'compacting' if compacting else 'no compaction'})")
    print(f"CPU: {platform.processor() or platform.machine()}  "
          f"{next((ln.split(':', 1)[1].strip() for ln in open('/proc/cpuinfo') if ln.startswith('model name')), '')}")
    with tempfile.TemporaryDirectory(prefix="hydra-memory-") as tmp, \
            running_stack(Path(tmp), {"eu-west": 1, "us-east": 1}, **overrides) as stack:
        app = create_app(stack.child_settings())
        r = app.redis
        print(f"Redis {r.info('server')['redis_version']}, appendfsync {r.config_get('appendfsync')['appendfsync']}")
        t0 = time.perf_counter()
        small = [submit_job(app, {"kind": "pi", "params": {"samples": SMALL_CHUNKS * CHUNK_SAMPLES, "seed": s}}).id
                 for s in range(SMALL_JOBS)]
        big = submit_job(app, {"kind": "pi", "params": {"samples": BIG_CHUNKS * CHUNK_SAMPLES, "seed": 99}}).id
        image = submit_job(app, {"kind": "mandelbrot", "params": {"width": 256, "height": 256, "max_iter": 200}}).id
        for job_id in [*small, big, image]:
            assert wait_for_job(app, job_id, timeout_s=900).state == "done", job_id
        print(f"ran {SMALL_JOBS} π jobs of {SMALL_CHUNKS} chunks, one of {BIG_CHUNKS} and a 256x256 Mandelbrot "
              f"in {time.perf_counter() - t0:.0f} s")
        time.sleep(DETAIL_S + 1.0)  # the chunk log's detail expires

        chunks = {j: store.get_job(r, j).chunks_done for j in [*small, big, image]}
        total_chunks = sum(chunks.values())
        small_bytes = sorted(job_bytes(r, j)[0] for j in small)
        small_median = small_bytes[len(small_bytes) // 2]
        big_own, _, big_keys = job_bytes(r, big)
        image_own, image_blobs, image_keys = job_bytes(r, image)
        per_chunk_job = (big_own - small_median) / (BIG_CHUNKS - SMALL_CHUNKS)
        minted = usage(r, keys.LEDGER_MINTED)
        per_chunk_minted = minted / total_chunks
        journal = usage(r, keys.LEDGER_JOURNAL)
        results_logs = pattern_bytes(r, f"{keys.PREFIX}:worker:*:results")
        dataset = int(r.info("memory")["used_memory_dataset"])
        aof_after_run = aof_bytes(r)
        rewrite(r)
        aof_rewritten = aof_bytes(r)
        for job_id in [*small, big, image]:
            store.delete_job(r, job_id)
        rewrite(r)
        aof_after_delete = aof_bytes(r)
        dataset_after_delete = int(r.info("memory")["used_memory_dataset"])

    figures = {
        "compacting": compacting, "chunks": total_chunks,
        "small_job_bytes_median": small_median, "big_job_bytes": big_own, "big_job_keys": big_keys,
        "mandelbrot_job_bytes": image_own, "mandelbrot_blob_bytes": image_blobs, "mandelbrot_keys": image_keys,
        "job_bytes_per_chunk": per_chunk_job, "minted_set_bytes": minted, "minted_bytes_per_chunk": per_chunk_minted,
        "journal_bytes_per_chunk": journal / total_chunks, "results_log_bytes_per_chunk": results_logs / total_chunks,
        "dataset_bytes": dataset, "aof_after_run": aof_after_run, "aof_after_rewrite": aof_rewritten,
        "dataset_after_delete": dataset_after_delete, "aof_after_delete_and_rewrite": aof_after_delete,
    }
    print(f"\nper finished job (its own keys, median of {SMALL_JOBS} jobs of {SMALL_CHUNKS} chunks): "
          f"{small_median:,} B   [target <= {TARGET_JOB_BYTES:,} B]")
    print(f"the {BIG_CHUNKS}-chunk π job: {big_own:,} B in {len(big_keys)} keys")
    print(f"the Mandelbrot job: {image_own:,} B in {len(image_keys)} keys, plus its image and counts {image_blobs:,} B")
    print(f"per chunk, kept by the job: {per_chunk_job:,.1f} B; mint idempotency keys: {per_chunk_minted:,.1f} B "
          f"(set of {minted:,} B)   [target <= {TARGET_CHUNK_BYTES:g} B together]")
    print(f"per chunk by design: journal {journal / total_chunks:,.0f} B (the ledger's audit trail), workers' results "
          f"logs {results_logs / total_chunks:,.0f} B (what a catch revokes; capped per worker)")
    print(f"AOF: {aof_after_run:,} B after the run, {aof_rewritten:,} B after BGREWRITEAOF "
          f"(live dataset {dataset:,} B); {aof_after_delete:,} B after deleting the jobs and rewriting "
          f"(dataset {dataset_after_delete:,} B)")
    ok = small_median <= TARGET_JOB_BYTES and per_chunk_job + per_chunk_minted <= TARGET_CHUNK_BYTES
    print(f"\nretained per finished job: {'PASS' if small_median <= TARGET_JOB_BYTES else 'MISSED'}; "
          f"per-chunk residue: {'PASS' if per_chunk_job + per_chunk_minted <= TARGET_CHUNK_BYTES else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
