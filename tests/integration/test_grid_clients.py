"""Carbon API clients against a real HTTP server on 127.0.0.1 serving the documented samples."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

from hydra_tasks.grid import GridError
from hydra_tasks.grid.chain import ProviderChain
from hydra_tasks.grid.clients import ElectricityMapsClient, UKCarbonIntensityClient, WattTimeClient
from hydra_tasks.grid.table import EmbeddedTableProvider

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "carbon" / "api-samples"
if not SAMPLES.is_dir():
    pytest.skip(f"carbon API samples not found at {SAMPLES}", allow_module_level=True)

EM_TOKEN = "em-secret-token-123"
WT_USER, WT_PASSWORD = "hydra", "wt-secret-password-456"
FILES = {
    "/intensity": "uk_intensity.json",
    "/v3/carbon-intensity/latest": "electricitymaps_v3_carbon-intensity_latest.json",
    "/v3/carbon-intensity/forecast": "electricitymaps_v3_carbon-intensity_forecast_shape.json",
    "/v3/forecast": "watttime_v3_forecast.json",
}


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def negate(body: Any) -> Any:
    """The same body with its intensity made negative."""
    if "carbonIntensity" in body:
        body["carbonIntensity"] = -1
    elif "intensity" in body["data"][0]:
        body["data"][0]["intensity"]["actual"] = -5
    else:
        body["data"][0]["value"] = -1.0
    return body


class ApiServer(ThreadingHTTPServer):
    """Serves the sample bodies. ``modes`` maps a path (or '*') to ok/500/slow/malformed/negative."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.modes: dict[str, str] = {}
        self.hits: list[str] = []
        self.logins = 0
        self.valid_tokens: set[str] = set()
        self.slow_s = 2.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: ApiServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def send_json(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def authorized(self, path: str) -> bool:
        if path.startswith("/v3/carbon-intensity/"):
            return self.headers.get("auth-token") == EM_TOKEN
        if path == "/login":
            expected = base64.b64encode(f"{WT_USER}:{WT_PASSWORD}".encode()).decode()
            return self.headers.get("Authorization") == f"Basic {expected}"
        if path == "/v3/forecast":
            auth = self.headers.get("Authorization", "")
            return auth.startswith("Bearer ") and auth[len("Bearer "):] in self.server.valid_tokens
        return True

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.server.hits.append(path)
        mode = self.server.modes.get(path, self.server.modes.get("*", "ok"))
        if mode == "500":
            return self.send_json(500, b'{"error":"boom"}')
        if mode == "slow":
            time.sleep(self.server.slow_s)
        if not self.authorized(path):
            return self.send_json(401, b'{"error":"unauthorized"}')
        if path == "/login":
            self.server.logins += 1
            token = f"jwt-{self.server.logins}"
            self.server.valid_tokens.add(token)
            return self.send_json(200, json.dumps({"token": token}).encode())
        if path not in FILES:
            return self.send_json(404, b'{"error":"not found"}')
        if mode == "malformed":
            return self.send_json(200, b'{"data": [')
        body = sample(FILES[path])
        if mode == "negative":
            body = negate(body)
        return self.send_json(200, json.dumps(body).encode())


@pytest.fixture()
def api() -> Iterator[ApiServer]:
    server = ApiServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def uk(api: ApiServer, **kw: Any) -> UKCarbonIntensityClient:
    return UKCarbonIntensityClient(api.url, backoff_s=0.01, **kw)


def em(api: ApiServer, token: str = EM_TOKEN, **kw: Any) -> ElectricityMapsClient:
    return ElectricityMapsClient(api.url, token=token, backoff_s=0.01, **kw)


def wt(api: ApiServer, password: str = WT_PASSWORD, **kw: Any) -> WattTimeClient:
    return WattTimeClient(
        api.url, username=WT_USER, password=password, regions={"US-CAL-CISO": "CAISO_NORTH"}, backoff_s=0.01, **kw
    )


# --- happy paths ---------------------------------------------------------------------------
def test_uk_client_reads_the_actual_intensity(api: ApiServer) -> None:
    reading = uk(api).intensity("GB")
    expected = sample("uk_intensity.json")["data"][0]
    assert reading.g_co2_per_kwh == expected["intensity"]["actual"]
    assert reading.at.isoformat().startswith("2018-01-20T12:00")


def test_uk_client_covers_only_great_britain(api: ApiServer) -> None:
    with pytest.raises(GridError, match="only zone 'GB'"):
        uk(api).intensity("FR")
    assert api.hits == []


def test_electricity_maps_client_reads_the_latest_intensity(api: ApiServer) -> None:
    reading = em(api).intensity("FR")
    assert reading.g_co2_per_kwh == sample("electricitymaps_v3_carbon-intensity_latest.json")["carbonIntensity"]
    assert reading.zone == "FR"


def test_electricity_maps_client_reads_the_forecast(api: ApiServer) -> None:
    readings = em(api).forecast("DE", 24)
    points = sample("electricitymaps_v3_carbon-intensity_forecast_shape.json")["forecast"]
    assert [r.g_co2_per_kwh for r in readings] == [p["carbonIntensity"] for p in points]


def test_watttime_client_converts_lbs_per_mwh_to_grams_per_kwh(api: ApiServer) -> None:
    reading = wt(api).intensity("US-CAL-CISO")
    lbs = sample("watttime_v3_forecast.json")["data"][0]["value"]
    assert reading.g_co2_per_kwh == pytest.approx(lbs * 0.453592)
    assert api.logins == 1


def test_watttime_client_reuses_its_token_and_logs_in_again_after_a_401(api: ApiServer) -> None:
    client = wt(api)
    client.intensity("US-CAL-CISO")
    client.intensity("US-CAL-CISO")
    assert api.logins == 1
    api.valid_tokens.clear()  # the server expires the token
    assert client.intensity("US-CAL-CISO").g_co2_per_kwh > 0
    assert api.logins == 2


def test_watttime_client_refuses_an_unmapped_zone(api: ApiServer) -> None:
    with pytest.raises(GridError, match="add it to regions"):
        wt(api).intensity("FR")


# --- failures ------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [uk, em, wt])
def test_server_errors_are_retried_then_raised(api: ApiServer, make: Any) -> None:
    api.modes["*"] = "500"
    zone = {"uk": "GB", "em": "FR", "wt": "US-CAL-CISO"}[make.__name__]
    with pytest.raises(GridError, match="HTTP 500 after retries"):
        make(api).intensity(zone)
    assert len(api.hits) == 3  # first try + 2 retries


@pytest.mark.parametrize("make", [uk, em])
def test_a_slow_server_fails_quickly_at_the_client_timeout(api: ApiServer, make: Any) -> None:
    api.modes["*"] = "slow"
    zone = "GB" if make is uk else "FR"
    started = time.monotonic()
    with pytest.raises(GridError, match="no answer .* within 0.2 s"):
        make(api, timeout_s=0.2).intensity(zone)
    assert time.monotonic() - started < api.slow_s


@pytest.mark.parametrize(("make", "zone"), [(uk, "GB"), (em, "FR"), (wt, "US-CAL-CISO")])
def test_malformed_json_is_an_error(api: ApiServer, make: Any, zone: str) -> None:
    for path in FILES:
        api.modes[path] = "malformed"
    with pytest.raises(GridError, match="valid JSON"):
        make(api).intensity(zone)


@pytest.mark.parametrize(("make", "zone"), [(uk, "GB"), (em, "FR"), (wt, "US-CAL-CISO")])
def test_a_negative_intensity_is_an_error(api: ApiServer, make: Any, zone: str) -> None:
    for path in FILES:
        api.modes[path] = "negative"
    with pytest.raises(GridError, match="negative"):
        make(api).intensity(zone)


def test_a_refused_token_is_reported_without_the_token(api: ApiServer) -> None:
    wrong = "wrong-em-token-789"
    client = em(api, token=wrong)
    with pytest.raises(GridError, match="refused the credentials") as info:
        client.intensity("FR")
    assert wrong not in str(info.value) and wrong not in repr(client)


def test_a_refused_password_is_reported_without_the_password(api: ApiServer) -> None:
    wrong = "wrong-wt-password-000"
    client = wt(api, password=wrong)
    with pytest.raises(GridError, match="refused the credentials") as info:
        client.intensity("US-CAL-CISO")
    assert wrong not in str(info.value) and wrong not in repr(client)
    assert WT_PASSWORD not in repr(wt(api))


def test_chain_falls_back_to_the_table_when_live_providers_are_down(
    api: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    api.modes["*"] = "500"
    chain = ProviderChain(
        [
            UKCarbonIntensityClient(dead_url(), timeout_s=0.5, backoff_s=0.01),
            em(api),
            EmbeddedTableProvider(),
        ]
    )
    with caplog.at_level("WARNING"):
        reading = chain.intensity("GB")
    assert reading.g_co2_per_kwh == 175.0 and reading.source.startswith("embedded-table")
    assert [f.provider for f in chain.failures] == ["uk-carbon-intensity", "electricity-maps"]
    assert EM_TOKEN not in caplog.text


def test_the_router_uses_the_configured_live_provider_and_shows_when_it_falls_back(
    api: ApiServer, redis_only: Any
) -> None:
    from hydra_tasks.metrics import sustainability_metrics
    from hydra_tasks.models import WorkerState
    from hydra_tasks.scheduling.cluster import snapshot
    from hydra_tasks.scheduling.router import GridAwareRouter, carbon_provider, router_for
    from hydra_tasks.worker.registry import WorkerInfo, register

    client = redis_only.redis
    now = time.time()
    register(client, WorkerInfo(worker_id="de@h", region="eu-central", host="h", pid=1, cores=1, concurrency=1,
                                pi_samples_per_s=1e9, mandelbrot_iters_per_s=1e9, state=WorkerState.ONLINE,
                                started_at=now, last_seen=now))
    settings = redis_only.settings.with_(carbon_providers=f"electricitymaps={api.url}", electricitymaps_token=EM_TOKEN)
    router = router_for(settings, client)
    assert isinstance(router, GridAwareRouter)
    live = sample("electricitymaps_v3_carbon-intensity_latest.json")["carbonIntensity"]
    assert router.scores(snapshot(client, settings))[1]["de@h"] == live  # the API's figure, not the table's 341

    api.modes["*"] = "500"
    carbon_provider(settings).clear_cache()
    fallback = router_for(settings, client).scores(snapshot(client, settings))[1]["de@h"]
    assert fallback == 341.0  # Germany's annual mean from the embedded table: routing goes on
    [failure] = sustainability_metrics(client)["carbon_provider_failures"][:1]
    assert failure["provider"] == "electricity-maps" and failure["zone"] == "DE"
    assert EM_TOKEN not in json.dumps(sustainability_metrics(client))


def test_live_providers_are_configured_by_settings_and_checked() -> None:
    from hydra_tasks.errors import ConfigError
    from hydra_tasks.grid.configure import build_chain
    from hydra_tasks.settings import Settings

    chain = build_chain(Settings.from_env({"HYDRA_CARBON_PROVIDERS": "electricitymaps,uk,watttime",
                                           "HYDRA_ELECTRICITYMAPS_TOKEN": "t", "HYDRA_WATTTIME_USERNAME": "u",
                                           "HYDRA_WATTTIME_PASSWORD": "p",
                                           "HYDRA_WATTTIME_REGIONS": "US-CAL-CISO=CAISO_NORTH"}))
    assert [p.name for p in chain.providers] == ["electricity-maps", "uk-carbon-intensity", "watttime",
                                                 "embedded-table"]
    for env, text in (({"HYDRA_CARBON_PROVIDERS": "electricitymaps"}, "HYDRA_ELECTRICITYMAPS_TOKEN"),
                      ({"HYDRA_CARBON_PROVIDERS": "watttime"}, "HYDRA_WATTTIME_USERNAME"),
                      ({"HYDRA_CARBON_PROVIDERS": "carbonaware"}, "not one of"),
                      ({"HYDRA_CARBON_PROVIDERS": "uk=ftp://x"}, "base-url")):
        with pytest.raises(ConfigError, match=text):
            Settings.from_env(env)
