"""Redis high availability across the namespaced network (issue 14, item 4): the primary is killed
with SIGKILL in the middle of jobs; a replica is promoted by the Sentinels, and the control plane and
the volunteers on their own hosts follow it without a restart or any manual step.

The HA set (``replication.HaRedis``: a primary, two replicas, three Sentinels, TLS only with the
deployment's CA) runs on the control host's bridge address; every volunteer, in its own namespace
behind a bandwidth-capped link, has only its ``rediss+sentinel://`` credentials. (No fault proxy
here: a volunteer asks the Sentinels for the primary and then connects to the address they name, so
a proxy on one port cannot sit on that path.) The control plane WAITs for a replica on every ledger
write, so no acknowledged mint or transfer can be lost in the failover (ARCHITECTURE.md, "High
availability: Redis Sentinel"). Checks: both jobs end with the reference result, each chunk is paid
once, ``hydra ledger verify`` passes on the new primary, every volunteer merges chunks after the
failover, and the time from the kill to the promotion and to the first merge is printed.
"""

from __future__ import annotations

import os
import time

from typing import Iterator

import pytest

from hydra_tasks import compute, keys
from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.jobs import store
from hydra_tasks.jobs.mandelbrot import decode_counts
from hydra_tasks.jobs.submit import submit_job
from support import wait_for, wait_for_job

import hydra_cluster
from hydra_cluster import Cluster, mint_keys, worker_chunks

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.cluster]

VOLUNTEERS = ("v1", "v2", "v3", "v4")
LINKS_KBIT = {"v1": 20_000, "v2": 10_000, "v3": 8_000, "v4": 5_000}
MANDELBROT = {"width": 480, "height": 360, "max_iter": 3000, "center_x": -0.745, "center_y": 0.11, "span": 0.05}
SEED = 20261202


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = hydra_cluster.unavailable()
    if reason:
        if os.environ.get("HYDRA_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"HYDRA_REQUIRE_CLUSTER=1 but the cluster cannot run: {reason}")
        pytest.skip(reason)
    c = Cluster(tmp_path_factory.mktemp("ha-cluster"), VOLUNTEERS, proxies=False, ha=True,
                overrides=dict(target_chunk_s=1.0, min_chunk_s=0.25))
    try:
        c.start()
        for name, rate in LINKS_KBIT.items():
            c.net.shape(name, rate_kbit=rate)  # type: ignore[union-attr]
        yield c
    finally:
        c.stop()


def test_killing_the_primary_mid_job_promotes_a_replica_and_everyone_follows(cluster: Cluster) -> None:
    ha = cluster.ha_redis
    app: HydraCelery = cluster.app()
    t = time.perf_counter()
    compute.pi_hits(1, 0, 50_000_000)
    samples = max(int(50_000_000 / (time.perf_counter() - t) * 2 * 3 / 1e8) * 100_000_000, 2_000_000_000)
    pi_id = submit_job(app, {"kind": "pi", "params": {"samples": samples, "seed": SEED}}).id
    tiles_id = submit_job(app, {"kind": "mandelbrot", "params": MANDELBROT}).id
    wait_for(lambda: store.get_job(app.redis, pi_id).chunks_done >= 3, timeout_s=90, what="progress")
    assert not store.get_job(app.redis, pi_id).is_final, "the job ended before the kill: make it longer"
    old_port = ha.primary_port()
    assert ha.role_of(old_port) == "primary"
    merged_before = int(app.redis.hget(keys.job(pi_id), "chunks_done") or 0)

    ha.kill("primary")
    killed_at = time.time()
    new_port = wait_for(lambda: (p := ha.primary_port()) not in (None, old_port) and p, timeout_s=60,
                        what="a replica to be promoted")
    promoted_s = time.time() - killed_at
    wait_for(lambda: int(app.redis.hget(keys.job(pi_id), "chunks_done") or 0) > merged_before
             or store.get_job(app.redis, pi_id).is_final, timeout_s=120, what="a merge on the new primary")
    resumed_s = time.time() - killed_at
    print(f"primary killed: {ha.role_of(new_port)} promoted after {promoted_s:.1f}s, first merge after {resumed_s:.1f}s")

    pi = wait_for_job(app, pi_id, timeout_s=240)
    assert pi.state == "done" and pi.result["hits"] == compute.pi_hits(SEED, 0, samples, threads=2)
    tiles = wait_for_job(app, tiles_id, timeout_s=240)
    assert tiles.state == "done"
    p = tiles.params
    whole = compute.mandelbrot_counts(xmin=p["xmin"], ymax=p["ymax"], dx=p["dx"], dy=p["dy"], col0=0, row0=0,
                                      width=p["width"], height=p["height"], max_iter=p["max_iter"])
    assert (decode_counts(app.redis.get(keys.job_counts(tiles_id)), p["height"], p["width"]) == whole).all()
    for job_id in (pi_id, tiles_id):
        twice = {k: n for k, n in mint_keys(app.redis, job_id).items() if n != 1}
        assert not twice, f"paid other than once: {twice}"
    done = cluster.hydra_cli("ledger", "verify")
    assert done.returncode == 0, done.stdout + done.stderr

    # Every volunteer, on its own host, consumes from the new primary without having been restarted.
    again = wait_for_job(app, submit_job(app, {"kind": "pi", "params": {"samples": samples, "seed": SEED + 1}}).id,
                         timeout_s=240)
    merged = worker_chunks(app.redis, again.id)
    idle = [n for n in VOLUNTEERS if not merged.get(cluster.volunteers[n].worker_id)]
    assert not idle, f"{idle} computed nothing after the failover; chunks per worker {merged}"
    assert all(cluster.stack.procs[f"worker-{n}"].alive for n in VOLUNTEERS)  # type: ignore[union-attr]

