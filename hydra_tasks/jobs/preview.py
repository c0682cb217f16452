"""An adaptive Mandelbrot job starts with a coarse preview; once it is merged, the job's
cost-balanced tiles are cut from the preview's per-pixel work map (:mod:`.tiling`), exactly once,
and the preview stands in as the job's image until the full-resolution one replaces it.
"""

from __future__ import annotations

import base64
import json

import redis

from .. import keys
from ..imaging import render_png
from ..scheduling.cluster import snapshot
from ..settings import Settings
from . import mandelbrot, tiling


def plan_tiles_after_preview(client: redis.Redis, settings: Settings, job_id: str) -> int:
    """Cut the job's tiles from its merged preview, exactly once (WATCH/MULTI). Returns the number
    of tiles planned (0 if already planned or the preview is missing)."""
    preview_json, part = client.hget(keys.job_chunks(job_id), "preview"), client.hget(keys.job_parts(job_id), "preview")
    spec_json = client.hget(keys.job(job_id), "spec")
    if not (preview_json and part and spec_json):
        return 0
    preview, payload = json.loads(preview_json)["params"], json.loads(part)
    params = json.loads(spec_json)["params"]
    height, width = int(preview["height"]), int(preview["width"])
    work_map = mandelbrot.decode_array(payload["work_map"], height, width)
    snap = snapshot(client, settings)
    rates = [w.rate("mandelbrot") for w in snap.workers.values()] or [1e9]
    tiles = tiling.plan_tiles(job_id, params, work_map, int(preview["stride"]), fleet_rate=sum(rates) / len(rates),
                              slots=sum(snap.slots.values()), target_s=settings.target_chunk_s)
    counts = mandelbrot.decode_counts(payload["counts"], height, width)
    image = base64.b64encode(render_png(counts, int(params["max_iter"]))).decode()
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(keys.job(job_id))
            if pipe.hget(keys.job(job_id), "tiled"):
                return 0
            pipe.multi()
            pipe.hset(keys.job_chunks(job_id), mapping={t.chunk_id: json.dumps(t.to_json()) for t in tiles})
            pipe.zadd(keys.job_tiles(job_id), {t.chunk_id: float(t.params["est_cost"]) for t in tiles})
            pipe.hincrby(keys.job(job_id), "chunks_total", len(tiles))
            pipe.hset(keys.job(job_id), mapping={"tiled": "1", "iters_per_px": repr(float(work_map.mean()) + 1.0)})
            pipe.setnx(keys.job_image(job_id), image)
            pipe.execute()
        except redis.WatchError:
            return 0
    return len(tiles)
