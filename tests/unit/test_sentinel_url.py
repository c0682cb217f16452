"""The Sentinel URL (issue 14, item 4): one Hydra form, read the same by redis-py, kombu and Celery,
by settings and by a volunteer's credentials. The failover itself: tests/integration/test_sentinel.py."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from hydra_tasks.celery_app import celery_config, redacted
from hydra_tasks.errors import ConfigError
from hydra_tasks.redis_conn import (
    SentinelUrl, connect, is_sentinel, is_tls, kombu_transport_options, kombu_url, sentinel_of,
)
from hydra_tasks.settings import Settings
from hydra_tasks.trust import volunteers
from hydra_tasks.worker import join

URL = "rediss+sentinel://hydra:p%40ss%3Aw0rd@s1:26380,s2,[::1]:26381/hydra/2"


def test_a_sentinel_url_names_the_sentinels_the_master_the_database_the_credentials_and_tls() -> None:
    target = SentinelUrl.parse(URL)
    assert target.sentinels == (("s1", 26380), ("s2", 26379), ("::1", 26381))
    assert (target.master_name, target.db, target.username, target.password, target.tls) == \
        ("hydra", 2, "hydra", "p@ss:w0rd", True)
    assert SentinelUrl.parse(target.to_url()) == target
    assert is_sentinel(URL) and is_tls(URL) and not is_tls("redis+sentinel://h/m")
    assert SentinelUrl.parse("redis+sentinel://h/m").db == 0
    assert "p%40ss" not in redacted(URL) and "p@ss" not in redacted(URL) and "s2:26379" in redacted(URL)


@pytest.mark.parametrize("bad", ["redis+sentinel://h1,h2", "redis+sentinel:///hydra", "redis+sentinel://h:x/m",
                                 "redis+sentinel://h/m/db", "redis+sentinel://h/m/0/extra"])
def test_a_malformed_sentinel_url_is_refused_by_settings_naming_the_variable_and_the_form(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"HYDRA_REDIS_URL: .*MASTER_NAME|HYDRA_REDIS_URL: .*HOST\[:PORT\]"):
        Settings.from_env({"HYDRA_REDIS_URL": bad})
    assert Settings.from_env({"HYDRA_REDIS_URL": URL}).redis_url == URL


def test_redis_py_gets_a_client_of_the_primary_that_asks_the_sentinels_with_the_urls_credentials() -> None:
    client = connect(URL, ca="/etc/ssl/certs/ca-certificates.crt")
    found = sentinel_of(client)
    assert found is not None
    manager, master = found
    assert master == "hydra"
    asked = [s.connection_pool.connection_kwargs for s in manager.sentinels]
    assert [(k["host"], k["port"]) for k in asked] == [("s1", 26380), ("s2", 26379), ("::1", 26381)]
    assert all(k["username"] == "hydra" and k["password"] == "p@ss:w0rd" for k in asked)
    server = client.connection_pool.connection_kwargs
    assert (server["username"], server["password"], server["db"]) == ("hydra", "p@ss:w0rd", 2)
    assert server["ssl_cert_reqs"] == "required" and server["ssl_check_hostname"] is True
    assert sentinel_of(connect("redis://h:1/0")) is None


def test_celery_gets_kombus_sentinel_form_the_master_name_and_tls_for_sentinels_and_servers(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = Settings().with_(redis_url=URL, redis_ca=str(ca), data_dir=tmp_path)
    config = celery_config(settings, URL)
    assert config["broker_url"] == kombu_url(URL) == (
        "sentinel://hydra:p%40ss%3Aw0rd@s1:26380/2;sentinel://hydra:p%40ss%3Aw0rd@s2:26379/2;"
        "sentinel://hydra:p%40ss%3Aw0rd@[::1]:26381/2")
    options = config["broker_transport_options"]
    assert options["master_name"] == "hydra" and options["visibility_timeout"] == 3600  # merged, not replaced
    assert options["sentinel_kwargs"]["ssl"] is True and options["sentinel_kwargs"]["ssl_ca_certs"] == str(ca)
    assert config["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(ca)}
    assert "result_backend" not in config and config["hydra_redis_url"] == URL
    assert kombu_transport_options("redis://h:1/0", None) == {}


def test_kombu_reads_the_translated_url_as_three_sentinels() -> None:
    from kombu import Connection

    conn = Connection(kombu_url(URL), transport_options=kombu_transport_options(URL, None))
    assert conn.transport_cls == "sentinel" and len(conn.alt) == 3
    assert (conn.userid, conn.password, conn.virtual_host) == ("hydra", "p@ss:w0rd", "2")


def test_a_volunteers_credentials_carry_the_sentinels_and_its_worker_follows_them() -> None:
    base = volunteers.volunteer_url(URL)
    assert base == "rediss+sentinel://s1:26380,s2:26379,[::1]:26381/hydra/2"  # no operator credentials
    creds = volunteers.Credentials("vol1", "vol1@hydra", ("eu",), volunteers._with_user(base, "vol1", "pw"))
    again = volunteers.Credentials.from_json(creds.to_json())
    assert again.redis_url == "rediss+sentinel://vol1:pw@s1:26380,s2:26379,[::1]:26381/hydra/2"
    config = join.celery_settings(again, celery_config(Settings(), again.redis_url))
    assert config["broker_url"].startswith("sentinel://vol1:pw@s1:26380/2;")
    assert config["broker_transport_options"]["master_name"] == "hydra"
    assert config["broker_transport_options"]["unacked_key"] == "hydra.unacked.vol1"
