"""The webapp's HTTP API and dashboard, against a real embedded Redis (no mocks, no fakes).

Submitting sends a real dispatch message to the broker (the same Redis); most tests need no
worker to consume it. The last few run a real local stack so that jobs actually finish.
"""

from __future__ import annotations

import io
import stat
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from hydra_tasks import keys
from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.errors import ConfigError
from hydra_tasks.models import WorkerState
from hydra_tasks.settings import Settings
from hydra_tasks.worker.registry import WorkerInfo, register
from hydra_webapp import create_app
from support import free_port

pytestmark = pytest.mark.integration

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PI_JOB = {"kind": "pi", "params": {"samples": 1e8, "seed": 1}, "priority": 5}
MANDELBROT_JOB = {"kind": "mandelbrot", "params": {"width": 64, "height": 48, "max_iter": 100}}


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def settings(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings().with_(redis_url=redis_url, data_dir=tmp_path_factory.mktemp("webapp-data"), api_token=TOKEN)


@pytest.fixture(scope="module")
def app(settings: Settings) -> Iterator[Flask]:
    flask_app = create_app(settings)
    yield flask_app
    hydra(flask_app).close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def hydra(app: Flask) -> HydraCelery:
    celery_app: HydraCelery = app.extensions["hydra"]
    return celery_app


def stored_jobs(app: Flask) -> int:
    return int(hydra(app).redis.zcard(keys.JOBS))


def submit(client: FlaskClient, spec: dict[str, Any] = PI_JOB) -> dict[str, Any]:
    response = client.post("/api/jobs", json=spec, headers=AUTH)
    assert response.status_code == 201, response.get_json()
    job: dict[str, Any] = response.get_json()
    return job


# --- submitting --------------------------------------------------------------------------------
def test_posting_a_valid_pi_job_returns_201_and_the_job_is_queued_in_redis(app: Flask, client: FlaskClient) -> None:
    before = stored_jobs(app)
    response = client.post("/api/jobs", json=PI_JOB, headers=AUTH)
    assert response.status_code == 201
    job = response.get_json()
    assert response.headers["Location"] == f"/api/jobs/{job['id']}"
    assert stored_jobs(app) == before + 1

    stored = client.get(f"/api/jobs/{job['id']}").get_json()
    assert stored["state"] == "queued" and stored["kind"] == "pi"
    assert stored["units_total"] == 100_000_000 and stored["units_done"] == 0  # π ranges are cut at dispatch
    assert stored["params"] == {"samples": 100_000_000, "seed": 1, "generator": "philox4x32-10"}


def test_a_mandelbrot_job_can_be_submitted_too(client: FlaskClient) -> None:
    job = submit(client, MANDELBROT_JOB)
    assert job["kind"] == "mandelbrot" and job["units_total"] == 64 * 48 and job["chunks_total"] >= 1


def test_posting_without_a_token_is_refused_and_stores_nothing(app: Flask, client: FlaskClient) -> None:
    before = stored_jobs(app)
    response = client.post("/api/jobs", json=PI_JOB)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in response.get_json()["error"]
    assert stored_jobs(app) == before


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}x", "Bearer wrong", f"Basic {TOKEN}", "Bearer", "Bearer  "])
def test_posting_with_a_wrong_token_is_refused_and_stores_nothing(
    app: Flask, client: FlaskClient, header: str
) -> None:
    before = stored_jobs(app)
    response = client.post("/api/jobs", json=PI_JOB, headers={"Authorization": header})
    assert response.status_code == 401
    assert "HYDRA_API_TOKEN" in response.get_json()["error"]
    assert TOKEN not in response.get_data(as_text=True)
    assert stored_jobs(app) == before


def test_malformed_json_is_rejected_with_a_message_about_json(app: Flask, client: FlaskClient) -> None:
    before = stored_jobs(app)
    response = client.post("/api/jobs", data='{"kind": "pi",', content_type="application/json", headers=AUTH)
    assert response.status_code == 400
    assert "not valid JSON" in response.get_json()["error"]
    assert stored_jobs(app) == before


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        ('{"kind": "pi"}', "text/plain", "Content-Type: application/json"),
        ("", "application/json", "body is empty"),
        ("[1, 2]", "application/json", "must be a JSON object, got a JSON array"),
        ('"pi"', "application/json", "must be a JSON object, got a JSON string"),
        ('{"kind": "pi", "params": {"samples": NaN}}', "application/json", "not valid JSON"),
        ("[" * 50_000 + "]" * 10_000, "application/json", "not valid JSON"),
    ],
    ids=["wrong-content-type", "empty", "array", "string", "nan", "deeply-nested"],
)
def test_a_body_that_is_not_a_json_object_is_rejected_with_a_clear_message(
    app: Flask, client: FlaskClient, body: str, content_type: str, message: str
) -> None:
    before = stored_jobs(app)
    response = client.post("/api/jobs", data=body, content_type=content_type, headers=AUTH)
    assert response.status_code == 400
    assert message in response.get_json()["error"]
    assert stored_jobs(app) == before


def test_an_oversized_body_is_refused_with_413(app: Flask, client: FlaskClient) -> None:
    before = stored_jobs(app)
    body = '{"kind": "pi", "params": {"samples": 1000}, "x": "' + "a" * 70_000 + '"}'
    response = client.post("/api/jobs", data=body, content_type="application/json", headers=AUTH)
    assert response.status_code == 413
    assert "error" in response.get_json()
    assert stored_jobs(app) == before


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "bitcoin", "params": {}}, "Unknown job kind 'bitcoin'"),
        ({"kind": "pi", "params": {"samples": -5}}, "'samples'=-5 is out of range"),
        ({"kind": "pi", "params": {"samples": "lots"}}, "'samples' must be an integer"),
        ({"kind": "pi", "params": {"samples": True}}, "'samples' must be an integer"),
        ({"kind": "pi", "params": [1, 2]}, "'params' must be a JSON object"),
        ({"kind": "pi", "params": {"samples": 1000}, "priority": "high"}, "'priority' must be an integer"),
        ({"kind": "mandelbrot", "params": {"width": 100_000, "height": 100_000}}, "out of range"),
        ({"kind": "mandelbrot", "params": {"width": 16_000, "height": 16_000}}, "exceeds the limit"),
    ],
    ids=["unknown-kind", "negative-samples", "string-samples", "bool-samples", "params-list", "string-priority",
         "absurd-side", "absurd-pixels"],
)
def test_an_invalid_job_spec_is_rejected_with_the_validation_message_and_nothing_is_stored(
    app: Flask, client: FlaskClient, spec: dict[str, Any], message: str
) -> None:
    before = stored_jobs(app)
    response = client.post("/api/jobs", json=spec, headers=AUTH)
    assert response.status_code == 400
    assert message in response.get_json()["error"]
    assert stored_jobs(app) == before


# --- reading -----------------------------------------------------------------------------------
def test_listing_jobs_returns_the_newest_first_and_honours_the_limit(client: FlaskClient) -> None:
    first, second = submit(client), submit(client)
    jobs = client.get("/api/jobs?limit=2").get_json()["jobs"]
    assert [j["id"] for j in jobs] == [second["id"], first["id"]]
    assert len(client.get("/api/jobs?limit=1").get_json()["jobs"]) == 1


@pytest.mark.parametrize("limit", ["0", "501", "-1", "abc", "1.5", "", "9999999999"])
def test_a_limit_outside_1_to_500_is_a_400(client: FlaskClient, limit: str) -> None:
    response = client.get(f"/api/jobs?limit={limit}")
    assert response.status_code == 400
    assert "'limit' must be a whole number from 1 to 500" in response.get_json()["error"]


@pytest.mark.parametrize("job_id", ["0123456789abcdef", "ff"])
def test_an_unknown_job_id_is_a_404_json_error(client: FlaskClient, job_id: str) -> None:
    response = client.get(f"/api/jobs/{job_id}")
    assert response.status_code == 404
    assert response.is_json and f"No job '{job_id}'" in response.get_json()["error"]


@pytest.mark.parametrize("job_id", ["not-hex", "ABCDEF", "a" * 65, "hydra:jobs", "%2A"])
def test_a_malformed_job_id_is_a_404_json_error(client: FlaskClient, job_id: str) -> None:
    for path in (f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/image.png"):
        response = client.get(path)
        assert response.status_code == 404
        assert "job ids are 1-64 lowercase hex digits" in response.get_json()["error"]


def test_unknown_api_routes_and_methods_answer_in_json(client: FlaskClient) -> None:
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404 and "error" in missing.get_json()
    wrong_method = client.delete("/api/jobs")
    assert wrong_method.status_code == 405 and "error" in wrong_method.get_json()


def test_the_workers_endpoint_lists_registered_workers(app: Flask, client: FlaskClient) -> None:
    register(hydra(app).redis, _worker("listed-worker@host", host="box-1"))
    workers = {w["worker_id"]: w for w in client.get("/api/workers").get_json()["workers"]}
    assert workers["listed-worker@host"]["host"] == "box-1"
    assert workers["listed-worker@host"]["region"] == "eu-west"


def test_healthz_reports_that_redis_answers(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"ok": True, "redis": True}


# --- cancelling --------------------------------------------------------------------------------
def test_cancelling_a_queued_job_cancels_it_and_cancelling_again_is_a_409(client: FlaskClient) -> None:
    job = submit(client)
    response = client.post(f"/api/jobs/{job['id']}/cancel", headers=AUTH)
    assert response.status_code == 200
    assert response.get_json()["state"] == "cancelled"
    assert client.get(f"/api/jobs/{job['id']}").get_json()["state"] == "cancelled"

    again = client.post(f"/api/jobs/{job['id']}/cancel", headers=AUTH)
    assert again.status_code == 409
    assert "already cancelled" in again.get_json()["error"]


def test_cancelling_without_the_token_is_refused_and_leaves_the_job_alone(client: FlaskClient) -> None:
    job = submit(client)
    response = client.post(f"/api/jobs/{job['id']}/cancel")
    assert response.status_code == 401
    assert client.get(f"/api/jobs/{job['id']}").get_json()["state"] == "queued"


def test_cancelling_an_unknown_job_is_a_404(client: FlaskClient) -> None:
    response = client.post("/api/jobs/00000000deadbeef/cancel", headers=AUTH)
    assert response.status_code == 404 and "No job" in response.get_json()["error"]


# --- images ------------------------------------------------------------------------------------
def test_the_image_of_an_unfinished_mandelbrot_job_is_a_404_that_says_why(client: FlaskClient) -> None:
    job = submit(client, MANDELBROT_JOB)
    response = client.get(f"/api/jobs/{job['id']}/image.png")
    assert response.status_code == 404  # nothing of it is computed yet
    assert "it is queued" in response.get_json()["error"] and "nothing" in response.get_json()["error"]


def test_a_pi_job_has_no_image(client: FlaskClient) -> None:
    job = submit(client)
    response = client.get(f"/api/jobs/{job['id']}/image.png")
    assert response.status_code == 404
    assert "only Mandelbrot jobs have an image" in response.get_json()["error"]


# --- pages -------------------------------------------------------------------------------------
def test_the_index_page_lists_jobs_and_loads_local_assets_only(client: FlaskClient) -> None:
    job = submit(client)
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert job["id"] in page and f'href="/jobs/{job["id"]}"' in page
    assert "/static/app.js" in page and "/static/style.css" in page
    assert "http://" not in page and "https://" not in page  # no CDNs: the machines have no internet
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


def test_the_job_page_shows_the_job_and_its_progress(client: FlaskClient) -> None:
    job = submit(client, MANDELBROT_JOB)
    response = client.get(f"/jobs/{job['id']}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert job["id"] in page and "<progress" in page and "queued" in page
    assert "carbon-blind routing" in page  # the job's carbon, against what capacity routing would emit
    assert 'id="live-image"' in page and "Image so far" in page  # filled in live as chunks arrive


def test_the_page_of_an_unknown_job_is_a_404_html_page(client: FlaskClient) -> None:
    response = client.get("/jobs/0123456789abcdef")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "No job" in response.get_data(as_text=True)


def test_worker_data_is_escaped_on_the_dashboard(app: Flask, client: FlaskClient) -> None:
    register(hydra(app).redis, _worker('<img src=x onerror="alert(1)">@evil', host="<script>alert(2)</script>"))
    page = client.get("/").get_data(as_text=True)
    assert "<script>alert(2)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page


def _worker(worker_id: str, *, host: str) -> WorkerInfo:
    now = time.time()
    return WorkerInfo(worker_id=worker_id, region="eu-west", host=host, pid=1, cores=2, concurrency=1,
                      pi_samples_per_s=1e9, mandelbrot_iters_per_s=1e9, state=WorkerState.ONLINE,
                      started_at=now, last_seen=now)


# --- the operator token ------------------------------------------------------------------------
def test_without_a_configured_token_one_is_created_in_the_data_dir_with_mode_0600_and_reused(
    redis_url: str, tmp_path: Path
) -> None:
    settings = Settings().with_(redis_url=redis_url, data_dir=tmp_path / "not" / "yet" / "there", api_token=None)
    app = create_app(settings)
    token_file = tmp_path / "not" / "yet" / "there" / "api_token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 40

    assert create_app(settings).extensions["hydra_api_token"].value == token  # reused, not replaced
    client = app.test_client()
    refused = client.post("/api/jobs", json=PI_JOB, headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401
    message = refused.get_json()["error"]
    assert "api_token file" in message and token not in refused.get_data(as_text=True)
    assert str(tmp_path) not in message  # says where the token is, without revealing the host's paths
    accepted = client.post("/api/jobs", json=PI_JOB, headers={"Authorization": f"Bearer {token}"})
    assert accepted.status_code == 201
    assert token not in repr(app.extensions["hydra_api_token"])
    hydra(app).close()


def test_a_malformed_token_file_is_a_clear_error_at_start_up(redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "api_token").write_text("   \n")
    with pytest.raises(ConfigError, match="api_token is empty or malformed; delete it"):
        create_app(Settings().with_(redis_url=redis_url, data_dir=tmp_path, api_token=None))


# --- when Redis is not there --------------------------------------------------------------------
def test_when_redis_is_down_the_api_answers_503_and_healthz_says_so(tmp_path: Path) -> None:
    url = f"redis://:password@127.0.0.1:{free_port()}/0"
    app = create_app(Settings().with_(redis_url=url, data_dir=tmp_path, api_token=TOKEN))
    client = app.test_client()
    assert client.get("/healthz").get_json() == {"ok": True, "redis": False}
    response = client.get("/api/jobs")
    assert response.status_code == 503
    assert "Redis is unavailable" in response.get_json()["error"]
    assert client.get("/").status_code == 503


def test_without_any_redis_configured_the_api_answers_503_saying_how_to_start_one(tmp_path: Path) -> None:
    app = create_app(Settings().with_(redis_url=None, data_dir=tmp_path, api_token=TOKEN))
    client = app.test_client()
    assert client.get("/healthz").get_json() == {"ok": True, "redis": False}
    response = client.get("/api/jobs/0123456789abcdef")
    assert response.status_code == 503
    message = response.get_json()["error"]
    assert "hydra up" in message and "$HYDRA_DATA_DIR/redis" in message
    assert str(tmp_path) not in message  # the data dir holds the API token: its path is not for clients
    page = client.get("/").get_data(as_text=True)
    assert "hydra up" in page and str(tmp_path) not in page


# --- finished jobs, with real workers ------------------------------------------------------------
@pytest.fixture(scope="module")
def live_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    from support import running_stack

    with running_stack(tmp_path_factory.mktemp("webapp-stack"), {"eu-west": 1},
                       pi_chunk_samples=5_000_000, tile_px=32) as stack:
        app = create_app(stack.child_settings().with_(api_token=TOKEN))
        yield app.test_client()
        hydra(app).close()


def wait_until_final(client: FlaskClient, job_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").get_json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish within {timeout_s} s")


def test_a_finished_pi_job_page_shows_the_estimate_its_error_and_the_workers(live_client: FlaskClient) -> None:
    job = wait_until_final(live_client, submit(live_client, {"kind": "pi", "params": {"samples": 2e7, "seed": 3}})["id"])
    assert job["state"] == "done", job
    page = live_client.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert f"π ≈ {job['result']['estimate']:.10f}" in page
    assert "95% confidence interval" in page and "20,000,000" in page
    assert all(worker_id in page for worker_id in job["workers"])


def test_a_finished_mandelbrot_job_serves_its_png_and_shows_it_on_its_page(live_client: FlaskClient) -> None:
    job = wait_until_final(live_client, submit(live_client, MANDELBROT_JOB)["id"])
    assert job["state"] == "done", job
    response = live_client.get(f"/api/jobs/{job['id']}/image.png")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert Image.open(io.BytesIO(response.data)).size == (64, 48)
    page = live_client.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert f'src="/api/jobs/{job["id"]}/image.png"' in page


def test_sustainability_metrics_report_totals_and_reject_bad_queries(client: FlaskClient) -> None:
    job = submit(client)
    body = client.get(f"/api/sustainability_metrics?job={job['id']}").get_json()
    assert set(body["overall"]) >= {"energy_kwh", "carbon_g", "counterfactual_g", "saved_g", "renewable_kwh"}
    assert body["jobs"][0]["job_id"] == job["id"] and body["jobs"][0]["carbon_g"] == 0.0  # nothing computed yet
    assert client.get("/api/sustainability_metrics?limit=500").status_code == 400
    assert client.get("/api/sustainability_metrics?job=ffffffffffffffff").status_code == 404


def test_a_deferrable_job_page_shows_its_deadline_and_the_power_it_may_use(client: FlaskClient, app: Flask) -> None:
    job = submit(client, {**PI_JOB, "deadline": time.time() + 7200})
    hydra(app).redis.hset(keys.job(job["id"]), "carbon_threshold", "23.0")  # as the dispatcher's plan writes it
    page = client.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert "Deadline" in page and "at most 23 gCO₂/kWh" in page
    assert client.get(f"/api/jobs/{job['id']}").get_json()["carbon_threshold"] == 23.0


def test_the_job_page_shows_the_centre_and_span_the_user_gave_not_derived_bounds(client: FlaskClient) -> None:
    """Issue 13: a view given as centre and span is shown as given, without the float noise of the
    bounds computed from it (-0.742 + 0.004/2 ... printed as -0.7420000000000001 before)."""
    job = submit(client, {"kind": "mandelbrot", "params": {"width": 64, "height": 48, "max_iter": 100,
                                                            "center_x": -0.742, "center_y": 0.1, "span": 0.004}})
    page = client.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert "<th>center_x</th><td><code>-0.742</code>" in page and "<th>span</th><td><code>0.004</code>" in page
    assert "<th>xmin</th>" not in page and "<th>dx</th>" not in page
    stored = client.get(f"/api/jobs/{job['id']}").get_json()["params"]  # the API keeps everything
    assert stored["center_x"] == -0.742 and stored["xmin"] == pytest.approx(-0.744)
    bounds = submit(client, {"kind": "mandelbrot", "params": {"width": 64, "height": 48, "max_iter": 100,
                                                               "xmin": -2, "xmax": 1, "ymin": -1, "ymax": 1}})
    page = client.get(f"/jobs/{bounds['id']}").get_data(as_text=True)
    assert "<th>xmin</th><td><code>-2.0</code>" in page and "<th>center_x</th>" not in page


def test_a_running_mandelbrot_jobs_image_fills_in_tile_by_tile(app: Flask, client: FlaskClient) -> None:
    """Issue 13: GET .../image.png of a running job is its image so far (never cached): merged tiles
    exactly as the kernel computes them, nothing yet elsewhere; the job page shows it live."""
    import io

    import numpy as np
    from PIL import Image

    from hydra_tasks import compute as kernels
    from hydra_tasks.imaging import render_png
    from hydra_tasks.jobs import collect, store
    from hydra_tasks.worker.compute import run_chunk
    from support import dispatch_in_process, keyed_worker

    celery_app = hydra(app)
    key = keyed_worker(celery_app, "painter@test")
    spec = {"kind": "mandelbrot", "params": {"width": 64, "height": 48, "max_iter": 100}, "priority": 9}
    job = submit(client, spec)  # adaptive: its preview comes first, then tiles cut from it
    page = client.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert 'id="live-image"' in page and "Image so far" in page
    settings = celery_app.settings

    def compute_next() -> dict[str, Any]:
        chunk, attempt, worker = next(s for s in dispatch_in_process(celery_app, settings)
                                      if s[0]["job_id"] == job["id"])
        result = run_chunk(chunk, attempt=attempt, worker_id=worker, region="r", key=key)
        assert collect.collect(celery_app.redis, settings, result) == "merged"
        assert not store.get_job(celery_app.redis, job["id"]).is_final
        return chunk

    def image_so_far() -> np.ndarray:
        response = client.get(f"/api/jobs/{job['id']}/image.png")
        assert response.status_code == 200 and response.mimetype == "image/png"
        assert "no-store" in response.headers["Cache-Control"] and response.headers["X-Hydra-Partial"] == "1"
        return np.asarray(Image.open(io.BytesIO(response.data)).convert("RGB"))

    p = store.get_job(celery_app.redis, job["id"]).params
    reference = kernels.mandelbrot_counts(xmin=float(p["xmin"]), ymax=float(p["ymax"]), dx=float(p["dx"]),
                                          dy=float(p["dy"]), col0=0, row0=0, width=64, height=48, max_iter=100)
    want = np.asarray(Image.open(io.BytesIO(render_png(reference, 100))).convert("RGB"))
    preview = compute_next()
    assert preview["chunk_id"] == "preview"
    got, stride = image_so_far(), preview["params"]["stride"]
    centres = (slice(stride // 2, 48, stride), slice(stride // 2, 64, stride))  # the preview's own samples
    assert np.array_equal(got[centres], want[centres])
    tile = compute_next()["params"]
    got = image_so_far()
    r, c, h, w = tile["row0"], tile["col0"], tile["height"], tile["width"]
    assert np.array_equal(got[r:r + h, c:c + w], want[r:r + h, c:c + w])  # the merged tile, exactly
