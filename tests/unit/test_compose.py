"""compose.yaml is checked by parsing it (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_runs_the_control_plane_workers_webapp_and_flower(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "control", "intake", "beat", "webapp", "flower"} <= services.keys()
    regions = [s for s in services if s.startswith("worker-")]
    assert len(regions) >= 2
    assert services["control"]["command"][:6] == ["celery", "-A", "hydra_tasks", "worker", "-Q", "hydra.control"]
    # The intake worker consumes hydra.intake alone (worker/gate.py refuses a mix).
    assert services["intake"]["command"][:6] == ["celery", "-A", "hydra_tasks", "worker", "-Q", "hydra.intake"]
    for name in regions:
        data_dir = services[name]["environment"]["HYDRA_DATA_DIR"]
        assert services[name]["command"] == ["hydra", "worker", "--join", f"{data_dir}/volunteer.json"]


CONTROL_PLANE = {"control", "intake", "enrol", "beat", "webapp", "flower"}
MONITORING = {"prometheus", "grafana"}
HA = {"ha-config", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
SENTINELS = "sentinel-1:26379,sentinel-2:26379,sentinel-3:26379"


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation (${V}, ${V:-d}, ${V-d}, ${V:?e}, ${V?e}, ${V:+r}, ${V+r}, nested;
    $$ is a literal $), as https://docs.docker.com/reference/compose-file/interpolation/ describes it."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0) if text[j - 1] == "$" or text[j] == "}" else 0
                j += 1
            body = text[i + 2:j - 1]
            m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?$", body, re.S)
            assert m, body
            name, op, arg = m.group(1), m.group(2), m.group(3) or ""
            value = env.get(name)
            present = value is not None and (value != "" or not (op or "").startswith(":"))
            if op is None:
                out.append(value or "")
            elif op.endswith("-"):
                out.append(value if present else interpolate(arg, env))
            elif op.endswith("?"):
                if not present:
                    raise ValueError(interpolate(arg, env))
                out.append(value or "")
            else:
                out.append(interpolate(arg, env) if present else "")
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def test_the_control_plane_reaches_redis_over_tls_as_the_operator_with_a_password_from_the_environment(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert CONTROL_PLANE | {"redis", "tls-init"} | MONITORING | HA | {s for s in services if s.startswith("worker-")} \
        == set(services)
    for name in CONTROL_PLANE:
        service = services[name]
        url = interpolate(service["environment"]["HYDRA_REDIS_URL"], {"HYDRA_REDIS_PASSWORD": "pw"})
        assert url == "rediss://hydra:pw@redis:6379/0"
        with pytest.raises(ValueError, match="set HYDRA_REDIS_PASSWORD"):
            interpolate(service["environment"]["HYDRA_REDIS_URL"], {})
        assert service["environment"]["HYDRA_ISOLATE"] == "true"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        ca = service["environment"]["HYDRA_REDIS_CA"]
        [mount] = [v for v in service["volumes"] if v.startswith("tls-ca:")]
        assert mount.endswith(":ro") and ca.startswith(mount.split(":")[1] + "/")


def test_bundled_volunteers_are_enrolled_and_never_see_the_operators_password(compose: dict[str, Any]) -> None:
    services = compose["services"]
    enrol = services["enrol"]
    script = " ".join(enrol["command"])
    assert enrol["restart"] == "no" and "hydra volunteer add" in script and "--out" in script
    for name in (s for s in services if s.startswith("worker-")):
        worker = services[name]
        assert set(worker["environment"]) == {"HYDRA_DATA_DIR"}  # no HYDRA_REDIS_URL, no password
        assert worker["depends_on"] == {"enrol": {"condition": "service_completed_successfully"}}
        [volume] = [v.split(":")[0] for v in worker["volumes"]]
        [into] = [v.split(":")[1] for v in enrol["volumes"] if v.split(":")[0] == volume]
        assert "/volunteers/$$r/volunteer.json" in script and into.startswith("/volunteers/")


def test_a_one_shot_service_makes_the_certificates_before_redis_starts(compose: dict[str, Any]) -> None:
    init = compose["services"]["tls-init"]
    assert "hydra tls init" in " ".join(init["command"]) and init["restart"] == "no"
    assert "redis" in init["environment"]["HYDRA_PUBLIC_HOST"].split(",")  # the name clients use in the URL
    assert init["hostname"]  # fixed, so the certificate's names do not change with each container
    assert compose["services"]["redis"]["depends_on"]["tls-init"]["condition"] == "service_completed_successfully"
    [mount] = [v for v in init["volumes"] if v.startswith("tls:")]
    assert mount.split(":")[1] == init["environment"]["HYDRA_DATA_DIR"] + "/tls"  # where `hydra tls init` writes
    [ca_mount] = [v for v in init["volumes"] if v.startswith("tls-ca:")]
    assert f"{ca_mount.split(':')[1]}/ca.pem" in " ".join(init["command"])  # the CA alone is published
    assert {"tls", "tls-ca"} <= compose["volumes"].keys()


def test_redis_serves_tls_only_with_the_server_certificate(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--port 0 " in command and "--tls-port 6379" in command and "--tls-auth-clients no" in command
    [mount] = [v for v in redis["volumes"] if v.startswith("tls:")]
    where = mount.split(":")[1]
    for option, name in (("--tls-cert-file", "server.pem"), ("--tls-key-file", "server.key"),
                         ("--tls-ca-cert-file", "ca.pem")):
        assert f"{option} {where}/{name}" in command
    health = " ".join(redis["healthcheck"]["test"])
    assert "--tls" in health and f"--cacert {where}/ca.pem" in health


def test_only_redis_and_the_webapp_mount_the_private_keys(compose: dict[str, Any]) -> None:
    with_keys = {name for name, service in compose["services"].items()
                 if any(v.startswith("tls:") for v in service.get("volumes", []))}
    assert with_keys == {"tls-init", "redis", "webapp", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}


def test_the_webapp_runs_under_gunicorn_with_https(compose: dict[str, Any]) -> None:
    webapp = compose["services"]["webapp"]
    command = webapp["command"]
    assert command[0] == "gunicorn" and command[-1] == "hydra_webapp:create_app()"
    # live-update streams hold a thread each: threaded workers with more threads than streams (webapp/events.py)
    from hydra_webapp.events import MAX_STREAMS

    assert command[command.index("--worker-class") + 1] == "gthread"
    assert int(command[command.index("--threads") + 1]) >= 2 * MAX_STREAMS
    [mount] = [v for v in webapp["volumes"] if v.startswith("tls:")]
    where = mount.split(":")[1]
    assert command[command.index("--certfile") + 1] == f"{where}/server.pem"
    assert command[command.index("--keyfile") + 1] == f"{where}/server.key"


def test_redis_persists_with_aof_and_has_only_the_operator_and_volunteer_users(compose: dict[str, Any]) -> None:
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in command and "--aclfile /data/users.acl" in command
    assert "user default off ~* &* +@all" in command  # nobody logs in as default; the AOF replays whole
    assert "user hydra on #$$(printf %s \"$$HYDRA_REDIS_PASSWORD\" | sha256sum" in command
    assert "grep -v -E '^user (default|hydra) ' /data/users.acl" in command  # volunteers are kept
    assert "--user hydra" in " ".join(compose["services"]["redis"]["healthcheck"]["test"])
    assert "redis-data:/data" in compose["services"]["redis"]["volumes"]


def test_published_ports_bind_to_loopback_and_secrets_are_not_in_the_file(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:")
    text = (ROOT / "compose.yaml").read_text()
    for line in text.splitlines():
        m = re.match(r"\s*[A-Z_]*(PASSWORD|TOKEN|AUTH):\s*(\S+)", line)
        if m and not line.strip().startswith("#"):
            assert m.group(2).startswith("${"), line


def test_the_image_builds_the_package_from_this_repository(compose: dict[str, Any]) -> None:
    build = compose["services"]["control"]["build"]
    dockerfile = build["dockerfile_inline"]
    assert build["context"] == "."
    for path in ("pyproject.toml", "hydra_tasks", "kernels", "webapp"):
        assert f"COPY {path}" in dockerfile or f" {path} " in dockerfile
        assert (ROOT / path).exists()
    assert "pip install" in dockerfile and "USER hydra" in dockerfile
    assert "march" not in dockerfile and "args" not in build  # one portable build: the kernels dispatch at import


def test_each_volunteer_keeps_its_key_and_so_its_tokens_across_restarts(compose: dict[str, Any]) -> None:
    data_dir = compose["x-hydra-env"]["HYDRA_DATA_DIR"]
    dockerfile = compose["services"]["control"]["build"]["dockerfile_inline"]
    assert f"install -d -o hydra -g hydra {data_dir}" in dockerfile  # the volume is the worker's to write
    for name, service in compose["services"].items():
        if name.startswith("worker-"):
            [mount] = [v for v in service["volumes"] if v.endswith(":" + data_dir)]
            assert mount.split(":")[0] in compose["volumes"]


def test_compose_seals_payloads_with_one_box_key_shared_by_the_services_that_seal_open_or_issue_it(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in CONTROL_PLANE:
        assert services[name]["environment"]["HYDRA_ENCRYPTION"] == "${HYDRA_ENCRYPTION:-true}"
    # control and intake seal chunks (and the intake opens results); enrol puts the public half into
    # the credentials: all three see the same data dir, where control-box.key lives.
    for name in ("control", "intake", "enrol"):
        data_dir = services[name]["environment"]["HYDRA_DATA_DIR"]
        assert f"control-data:{data_dir}" in services[name]["volumes"], name
    for name in (s for s in services if s.startswith("worker-")):
        assert not any(v.startswith("control-data") for v in services[name]["volumes"])


def test_prometheus_scrapes_the_webapps_metrics_over_https_and_grafana_charts_them(compose: dict[str, Any]) -> None:
    """Issue 13: the files compose mounts exist; Prometheus scrapes webapp:8000/metrics trusting Hydra's
    CA under a name the server certificate carries; Grafana gets the datasource and the dashboard,
    whose every query names metrics the exporter serves (checked against a real scrape in
    tests/integration/test_prometheus.py), and neither listens beyond loopback."""
    services = compose["services"]
    for name in MONITORING:
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"])
    config = yaml.safe_load((ROOT / "webapp/monitoring/prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["scheme"] == "https" and job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["webapp:8000"]}]
    assert job["tls_config"]["ca_file"] == "/tls-ca/ca.pem"
    assert "tls-ca:/tls-ca:ro" in services["prometheus"]["volumes"]
    assert job["tls_config"]["server_name"] in services["tls-init"]["environment"]["HYDRA_PUBLIC_HOST"].split(",")
    assert "--bind" in services["webapp"]["command"] and "0.0.0.0:8000" in services["webapp"]["command"]
    source = yaml.safe_load((ROOT / "webapp/monitoring/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_the_ha_profile_runs_a_replica_and_three_sentinels_and_the_control_plane_follows_them(
        compose: dict[str, Any], tmp_path: Path) -> None:
    """Issue 14, item 4: `REDIS_SENTINELS=... docker compose --profile ha up`. The HA services exist only in
    the profile; with REDIS_SENTINELS set every control-plane service gets a Sentinel URL that Hydra's own
    parser reads as three TLS Sentinels and the master `hydra`, and WAITs for one replica; unset, nothing
    changes (one server, no WAIT)."""
    from hydra_tasks.redis_conn import SentinelUrl
    from hydra_tasks.settings import Settings

    services = compose["services"]
    for name in HA:
        assert services[name]["profiles"] == ["ha"], name
    assert not any("profiles" in services[name] for name in set(services) - HA)
    env = {"HYDRA_REDIS_PASSWORD": "pw", "REDIS_SENTINELS": SENTINELS}
    for name in CONTROL_PLANE:
        environment = services[name]["environment"]
        url = interpolate(environment["HYDRA_REDIS_URL"], env)
        target = SentinelUrl.parse(url)
        assert target.sentinels == (("sentinel-1", 26379), ("sentinel-2", 26379), ("sentinel-3", 26379))
        assert (target.master_name, target.db, target.username, target.password, target.tls) == \
            ("hydra", 0, "hydra", "pw", True)
        ha = Settings.from_env({"HYDRA_REDIS_URL": url, "HYDRA_REDIS_WAIT_REPLICAS":
                                interpolate(environment["HYDRA_REDIS_WAIT_REPLICAS"], env)})
        assert ha.redis_wait_replicas == 1
        single = Settings.from_env({"HYDRA_REDIS_WAIT_REPLICAS": interpolate(environment["HYDRA_REDIS_WAIT_REPLICAS"],
                                                                             {"HYDRA_REDIS_PASSWORD": "pw"})})
        assert single.redis_wait_replicas == 0
        assert services[name]["depends_on"]["sentinel-1"] == {"condition": "service_started", "required": False}
    # The certificate names every server and Sentinel (clients check the name the Sentinels announce).
    names = services["tls-init"]["environment"]["HYDRA_PUBLIC_HOST"].split(",")
    assert {"redis", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"} <= set(names)


def test_the_ha_configuration_is_what_replication_renders_and_each_server_starts_from_its_own_file(
        compose: dict[str, Any], tmp_path: Path) -> None:
    from hydra_tasks import replication

    services = compose["services"]
    render = services["ha-config"]["command"]
    assert render[:4] == ["python", "-m", "hydra_tasks.replication", "render"]
    out = render[4]
    assert f"ha-config:{out}" in services["ha-config"]["volumes"]
    assert f" {out} " in services["control"]["build"]["dockerfile_inline"]  # the image's user owns the mount point
    assert services["ha-config"]["environment"]["HYDRA_REDIS_PASSWORD"].startswith("${HYDRA_REDIS_PASSWORD:?")
    assert replication.main([*render[3:4], str(tmp_path / "cfg"), *render[5:]]) == 2  # no password: refused
    os_env = {"HYDRA_REDIS_PASSWORD": "s3cret pw"}
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, os_env):
        assert replication.main([*render[3:4], str(tmp_path / "cfg"), *render[5:]]) == 0
    files = {p.name: p for p in (tmp_path / "cfg").iterdir()}
    assert set(files) == {"redis.conf", "redis-replica.conf", "sentinel.conf", "users.acl"}
    assert all(p.stat().st_mode & 0o077 == 0 for p in files.values())  # the password is in them: 0600
    primary, replica, sentinel = (files[n].read_text() for n in ("redis.conf", "redis-replica.conf", "sentinel.conf"))
    for conf in (primary, replica):
        lines = set(conf.splitlines())
        assert {"port 0", "tls-port 6379", "tls-replication yes", "appendonly yes", "appendfsync always",
                "masteruser hydra", 'masterauth "s3cret pw"', "min-replicas-to-write 1",
                'aclfile "/data/users.acl"'} <= lines
        assert "tls-cert-file /tls/server.pem" in lines and "tls-auth-clients no" in lines
    assert "replicaof redis 6379" in replica and "replicaof" not in primary
    assert "replica-announce-ip redis-replica" in replica
    assert {"sentinel monitor hydra redis 6379 2", "sentinel auth-user hydra hydra", 'sentinel auth-pass hydra "s3cret pw"',
            "sentinel resolve-hostnames yes", "sentinel announce-hostnames yes", "tls-port 26379", "port 0",
            "user default off resetkeys resetchannels -@all"} <= set(sentinel.splitlines())
    # Every data server's aclfile starts as the embedded Redis's does (default off, but the AOF replays whole).
    from hydra_tasks.embedded import DEFAULT_USER_LINE

    assert files["users.acl"].read_text().splitlines()[0] == DEFAULT_USER_LINE
    assert f'echo "{DEFAULT_USER_LINE}"' in " ".join(services["redis-replica"]["command"])
    assert f'echo "{DEFAULT_USER_LINE}"' in " ".join(services["redis"]["command"])
    # Each server starts from the file rendered for it, copied once into its own volume (Sentinel rewrites it).
    assert "cp /ha-config/redis.conf /data/redis.conf" in " ".join(services["redis"]["command"])
    assert "cp /ha-config/redis-replica.conf /data/redis.conf" in " ".join(services["redis-replica"]["command"])
    assert "replicaof redis 6379" in replica and "--replica" in render and "redis-replica" in render
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        command = " ".join(services[name]["command"])
        assert "cp /ha-config/sentinel.conf /data/sentinel.conf" in command and command.endswith("--sentinel")
        [data] = [v for v in services[name]["volumes"] if v.endswith(":/data")]
        assert data == f"{name}-data:/data" and data.split(":")[0] in compose["volumes"]
    # The single-server start is unchanged unless REDIS_SENTINELS is set.
    assert 'if [ -n "$$REDIS_SENTINELS" ]' in " ".join(services["redis"]["command"])
    assert services["redis"]["environment"]["REDIS_SENTINELS"] == "${REDIS_SENTINELS:-}"
