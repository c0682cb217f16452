"""Rate limits on the endpoints that take no operator token, counted in a real embedded Redis.

Each test sends from its own client address (``REMOTE_ADDR``), so the counters of one test never
reach another's; limits are small (set through the settings) so the tests are quick.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from nacl.signing import SigningKey

from hydra_tasks import keys
from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.settings import Settings
from hydra_tasks.trust import volunteers
from hydra_webapp import create_app
from hydra_webapp.auth import OPERATOR_ONLY
from hydra_webapp.ratelimit import WRITE_LIMITS, client_key
from support import free_port

pytestmark = pytest.mark.integration

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SMALL = dict(rate_limit_transfers="3/minute", rate_limit_grid_reports="2/minute", rate_limit_enrolment="2/hour",
             rate_limit_profiles="2/minute")
# (path, limit as the 429 describes it, its settings field)
OPEN_WRITES = [
    ("/api/transfer_tokens", "3 per minute", "rate_limit_transfers"),
    ("/api/update_grid_info", "2 per minute", "rate_limit_grid_reports"),
    ("/api/volunteers", "2 per hour", "rate_limit_enrolment"),
    ("/api/profile", "2 per minute", "rate_limit_profiles"),
]
_addresses = (f"198.51.100.{i}" for i in itertools.count(1))


@pytest.fixture(scope="module")
def settings(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings().with_(redis_url=redis_url, data_dir=tmp_path_factory.mktemp("limits-data"), api_token=TOKEN,
                            **SMALL)


@pytest.fixture(scope="module")
def app(settings: Settings) -> Iterator[Flask]:
    yield from _app(settings)


def _app(settings: Settings) -> Iterator[Flask]:
    flask_app = create_app(settings)
    yield flask_app
    celery_app: HydraCelery = flask_app.extensions["hydra"]
    celery_app.close()


def new_address() -> dict[str, str]:
    return {"REMOTE_ADDR": next(_addresses)}


def post(client: FlaskClient, path: str, environ: dict[str, str], **kwargs: Any) -> Any:
    return client.post(path, json=kwargs.pop("json", {}), environ_base=environ, **kwargs)


# --- the limits ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "described", "setting"), OPEN_WRITES, ids=[p for p, _, _ in OPEN_WRITES])
def test_an_open_endpoint_past_its_limit_answers_429_with_retry_after_and_says_which_limit(
        app: Flask, settings: Settings, path: str, described: str, setting: str) -> None:
    client, me = app.test_client(), new_address()
    allowed = int(getattr(settings, setting).split("/")[0])
    for _ in range(allowed):  # refused for their content (400/403), but counted: a limit is on requests
        assert post(client, path, me).status_code in (400, 403)
    over = post(client, path, me)
    assert over.status_code == 429
    assert over.mimetype == "application/problem+json"
    body = over.get_json()
    wait_s = int(over.headers["Retry-After"])
    window_s = 3600 if "hour" in described else 60
    assert 1 <= wait_s <= window_s
    message = f"Too many requests: POST {path} allows {described} from one client address. Try again in {wait_s} s."
    assert body == {"type": "about:blank", "title": "Too Many Requests", "status": 429, "detail": message,
                    "error": message, "limit": described, "retry_after_s": wait_s}


def test_the_counters_live_in_redis_so_two_webapps_on_one_redis_share_a_limit(app: Flask,
                                                                                 settings: Settings) -> None:
    for other in _app(settings):  # a second webapp process, as gunicorn's workers or another host are
        first, second, me = app.test_client(), other.test_client(), new_address()
        assert [post(c, "/api/transfer_tokens", me).status_code for c in (first, second, first)] == [400] * 3
        assert post(second, "/api/transfer_tokens", me).status_code == 429
        assert post(first, "/api/transfer_tokens", me).status_code == 429
    celery_app: HydraCelery = app.extensions["hydra"]
    assert any(celery_app.redis.scan_iter(f"{keys.RATE_LIMIT_PREFIX}:*"))


def test_each_address_has_its_own_budget(app: Flask) -> None:
    client, me, you = app.test_client(), new_address(), new_address()
    for _ in range(2):
        post(client, "/api/update_grid_info", me)
    assert post(client, "/api/update_grid_info", me).status_code == 429
    assert post(client, "/api/update_grid_info", you).status_code == 400


def test_endpoints_behind_the_operator_token_are_not_limited(app: Flask) -> None:
    client, me = app.test_client(), new_address()
    for _ in range(8):  # more than any open write allows here
        answer = client.post("/api/jobs/0123456789abcdef/cancel", headers=AUTH, environ_base=me)
        assert answer.status_code == 404
        assert client.get("/api/jobs", environ_base=me).status_code == 200  # reads: off by default


def test_every_endpoint_that_writes_without_the_operator_token_is_rate_limited(app: Flask) -> None:
    limited = {limit.endpoint for limit in WRITE_LIMITS}
    open_writes = {rule.endpoint for rule in app.url_map.iter_rules()
                   if rule.methods and rule.methods - {"GET", "HEAD", "OPTIONS"}
                   and not getattr(app.view_functions[rule.endpoint], OPERATOR_ONLY, False)}
    assert open_writes == limited


# --- the client address ------------------------------------------------------------------------------
def test_x_forwarded_for_is_ignored_unless_a_trusted_proxy_is_configured(app: Flask, settings: Settings) -> None:
    client, me = app.test_client(), new_address()
    for i in range(2):
        post(client, "/api/update_grid_info", me, headers={"X-Forwarded-For": f"203.0.113.{i}"})
    assert post(client, "/api/update_grid_info", me,
                headers={"X-Forwarded-For": "203.0.113.99"}).status_code == 429  # a new header buys nothing

    for proxied in _app(settings.with_(trusted_proxies=1)):
        client, proxy = proxied.test_client(), new_address()
        for _ in range(2):
            post(client, "/api/update_grid_info", proxy, headers={"X-Forwarded-For": "203.0.113.7"})
        assert post(client, "/api/update_grid_info", proxy,
                    headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 429
        assert post(client, "/api/update_grid_info", proxy,  # another client behind the same proxy
                    headers={"X-Forwarded-For": "203.0.113.8"}).status_code == 400


@pytest.mark.parametrize(("peer", "counted_as"), [
    ("192.0.2.1", "192.0.2.1"), ("::ffff:192.0.2.1", "192.0.2.1"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"), ("2001:db8:1:2::9", "2001:db8:1:2::/64"),
])
def test_an_ipv6_client_is_counted_by_its_64_and_a_mapped_ipv4_one_by_its_address(
        app: Flask, peer: str, counted_as: str) -> None:
    with app.test_request_context(environ_base={"REMOTE_ADDR": peer}):
        assert client_key() == counted_as


# --- configuring them ----------------------------------------------------------------------------------
def test_a_limit_follows_its_setting_and_off_turns_it_off(settings: Settings) -> None:
    env = {**{k: v for k, v in settings.to_env().items()}, "HYDRA_RATE_LIMIT_TRANSFERS": "1 per minute",
           "HYDRA_RATE_LIMIT_GRID_REPORTS": "off"}
    for configured in _app(Settings.from_env(env)):
        client, me = configured.test_client(), new_address()
        assert post(client, "/api/transfer_tokens", me).status_code == 400
        over = post(client, "/api/transfer_tokens", me)
        assert over.status_code == 429 and over.get_json()["limit"] == "1 per minute"
        assert {post(client, "/api/update_grid_info", me).status_code for _ in range(6)} == {400}


def test_a_reads_limit_is_shared_by_every_read_but_never_by_health_checks(settings: Settings) -> None:
    for configured in _app(settings.with_(rate_limit_reads="3/minute")):
        client, me = configured.test_client(), new_address()
        assert [client.get(p, environ_base=me).status_code for p in ("/api/jobs", "/api/workers", "/")] == [200] * 3
        over = client.get("/api/leaderboard", environ_base=me)
        assert over.status_code == 429 and "reads allows 3 per minute" in over.get_json()["error"]
        assert int(over.headers["Retry-After"]) >= 1
        page = client.get("/", environ_base=me)
        assert page.status_code == 429 and "Retry-After" in page.headers and "3 per minute" in page.get_data(True)
        assert client.get("/healthz", environ_base=me).status_code == 200
        assert client.get("/static/app.js", environ_base=me).status_code == 200


def test_the_self_enrolment_quota_behind_the_limiter_answers_429_with_retry_after_too(settings: Settings) -> None:
    quota = settings.with_(self_enrolment=True, rate_limit_enrolment="off")
    for configured in _app(quota):
        client, me = configured.test_client(), new_address()
        # 5 per address an hour, counted before the signature is checked (a body that breaks the
        # Enrolment schema is refused before that, and not counted)
        forged = [{**volunteers.signed_enrolment(SigningKey.generate(), f"v{i}", ["eu"]), "name": f"w{i}"}
                  for i in range(6)]
        answers = [post(client, "/api/volunteers", me, json=body) for body in forged]
        assert [a.status_code for a in answers] == [401] * 5 + [429]
        over = answers[-1]
        assert int(over.headers["Retry-After"]) == over.get_json()["retry_after_s"] >= 1


def test_without_redis_the_limited_endpoints_answer_503_and_are_never_unlimited(tmp_path: Any) -> None:
    down = f"redis://:password@127.0.0.1:{free_port()}/0"
    for app in _app(Settings().with_(redis_url=down, data_dir=tmp_path, api_token=TOKEN)):
        answer = app.test_client().post("/api/transfer_tokens", json={})
        assert answer.status_code == 503 and "Redis is unavailable" in answer.get_json()["error"]
    for app in _app(Settings().with_(redis_url=None, data_dir=tmp_path / "none", api_token=TOKEN)):
        answer = app.test_client().post("/api/update_grid_info", json={})
        assert answer.status_code == 503 and "restart the webapp once Redis runs" in answer.get_json()["error"]
