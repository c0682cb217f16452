"""Worker identity and signed grid reports (POST /api/update_grid_info) against a real Redis."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from hydra_tasks import keys
from hydra_tasks.trust import identity
from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.errors import IdentityError
from hydra_tasks.grid.site import signed_report
from hydra_tasks.models import WorkerState
from hydra_tasks.scheduling.cluster import snapshot
from hydra_tasks.scheduling.router import GridAwareRouter, router_for
from hydra_tasks.worker.registry import WorkerInfo, get_worker, register
from hydra_webapp import create_app

pytestmark = pytest.mark.integration


def info(worker_id: str, public_key: str, region: str = "ap-south") -> WorkerInfo:
    now = time.time()
    return WorkerInfo(worker_id=worker_id, region=region, host="h", pid=1, cores=2, concurrency=1,
                      pi_samples_per_s=1e9, mandelbrot_iters_per_s=1e9, state=WorkerState.ONLINE, started_at=now,
                      last_seen=now, public_key=public_key)


@pytest.fixture(scope="module")
def web(redis_only: HydraCelery) -> FlaskClient:
    return create_app(celery_app=redis_only).test_client()


def test_a_key_is_created_private_and_survives_export_and_import(tmp_path: Path) -> None:
    path = tmp_path / "k" / "worker.key"
    key = identity.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bytes(identity.load_or_create(path)) == bytes(key)  # reused, not replaced
    line = identity.export_text(key)
    other = tmp_path / "other.key"
    assert identity.public_hex(identity.import_key(line, other)) == identity.public_hex(key)
    with pytest.raises(IdentityError, match="another key"):
        identity.import_key(identity.export_text(identity.load_or_create(tmp_path / "third.key")), other)
    with pytest.raises(IdentityError, match="not a Hydra key"):
        identity.import_key("hydra-ed25519:zz", tmp_path / "bad.key")
    assert not (tmp_path / "bad.key").exists()


def test_a_worker_id_stays_bound_to_its_first_key(redis_only: HydraCelery, tmp_path: Path) -> None:
    mine, theirs = identity.load_or_create(tmp_path / "a"), identity.load_or_create(tmp_path / "b")
    register(redis_only.redis, info("bound@h", identity.public_hex(mine)))
    register(redis_only.redis, info("bound@h", identity.public_hex(mine)))  # a restart is fine
    with pytest.raises(IdentityError, match="registered to another key"):
        register(redis_only.redis, info("bound@h", identity.public_hex(theirs)))
    assert redis_only.redis.hget(keys.worker("bound@h"), "public_key") == identity.public_hex(mine)


def post(web: FlaskClient, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = web.post("/api/update_grid_info", json=body)
    return response.status_code, response.get_json()


def test_a_signed_report_moves_the_worker_to_its_own_zone_for_routing(
        redis_only: HydraCelery, web: FlaskClient, tmp_path: Path) -> None:
    key = identity.load_or_create(tmp_path / "solar")
    register(redis_only.redis, info("solar@h", identity.public_hex(key), region="ap-south"))  # IN, ~614 g
    register(redis_only.redis, info("grid@h", identity.public_hex(identity.load_or_create(tmp_path / "g")),
                                    region="eu-central"))  # DE, ~341 g
    settings = redis_only.settings
    router = router_for(settings)
    assert isinstance(router, GridAwareRouter)
    snap = snapshot(redis_only.redis, settings)
    before = router.scores(snap)[1]
    assert before["solar@h"] > before["grid@h"]
    status, body = post(web, signed_report(key, "solar@h", "FR", 0.5))
    assert status == 200, body
    stored = get_worker(redis_only.redis, "solar@h")
    assert stored is not None and (stored.grid_zone, stored.grid_renewable_share) == ("FR", 0.5)
    # The report sets a new registry generation: a control process's cached view of the fleet is read again.
    after = router_for(settings).scores(snapshot(redis_only.redis, settings))[1]
    assert after["solar@h"] == pytest.approx(33.0 * 0.5)  # FR's annual mean, half of it from the roof
    free = {"solar@h": 1, "grid@h": 1}
    assert router_for(settings).choose(snapshot(redis_only.redis, settings), free, "pi") == "solar@h"


def test_forged_replayed_stale_and_malformed_reports_are_refused_and_change_nothing(
        redis_only: HydraCelery, web: FlaskClient, tmp_path: Path) -> None:
    key, mallory = identity.load_or_create(tmp_path / "v"), identity.load_or_create(tmp_path / "m")
    register(redis_only.redis, info("victim@h", identity.public_hex(key)))
    good = signed_report(key, "victim@h", "SE", 0.2)
    assert post(web, good)[0] == 200
    snapshot_before = redis_only.redis.hgetall(keys.worker("victim@h"))
    tampered = {**signed_report(key, "victim@h", "SE", 0.2), "zone": "FR"}
    cases = {
        "replay": (good, 401, "not newer"),
        "forged": (signed_report(mallory, "victim@h", "FR", 1.0), 401, "signature does not match"),
        "tampered": (tampered, 401, "signature does not match"),
        "stale": (signed_report(key, "victim@h", "FR", 1.0, timestamp=time.time() - 3600), 401, "clock"),
        "unknown worker": (signed_report(key, "ghost@h", "FR", 1.0), 401, "No worker"),
        "unknown zone": (signed_report(key, "victim@h", "XX-NOWHERE", 1.0), 400, "zone"),
        "forged, unknown zone": (signed_report(mallory, "victim@h", "XX-NOWHERE", 1.0), 401, "signature"),
        "zone with markup": (signed_report(key, "victim@h", "<b>FR</b>\nx", 1.0), 400, "zone code"),
        "from the future": (signed_report(key, "victim@h", "FR", 1.0, timestamp=time.time() + 1800), 401, "ahead"),
        "share": (signed_report(key, "victim@h", "FR", 1.5), 400, "between 0 and 1"),
        "missing": ({"worker_id": "victim@h", "zone": "FR"}, 400, "missing"),
        "wrong type": ({**good, "renewable_share": "half"}, 400, "must be a number"),
        "bad signature": ({**good, "signature": "00"}, 401, "128"),
    }
    for name, (body, status, text) in cases.items():
        got_status, got = post(web, body)
        assert (got_status, text in got["error"]) == (status, True), (name, got)
    assert redis_only.redis.hgetall(keys.worker("victim@h")) == snapshot_before
