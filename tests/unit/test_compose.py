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
    assert {"redis", "control", "beat", "webapp", "flower"} <= services.keys()
    regions = [s for s in services if s.startswith("worker-")]
    assert len(regions) >= 2
    assert services["control"]["command"][:6] == ["celery", "-A", "hydra_tasks", "worker", "-Q", "hydra.control"]
    for name in regions:
        command = services[name]["command"]
        assert command[:3] == ["hydra", "worker", "--region"] and re.fullmatch(r"[a-z0-9-]+", command[3])


def test_every_hydra_service_reaches_redis_with_a_password_from_the_environment(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name == "redis":
            continue
        url = service["environment"]["HYDRA_REDIS_URL"]
        assert url.startswith("redis://:${HYDRA_REDIS_PASSWORD:?") and url.endswith("@redis:6379/0")
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_redis_persists_with_aof_and_requires_a_password(compose: dict[str, Any]) -> None:
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in command and "--requirepass" in command
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
    assert "ARG HYDRA_PORTABLE" in dockerfile and "HYDRA_PORTABLE" in build["args"]


def test_each_volunteer_keeps_its_key_and_so_its_tokens_across_restarts(compose: dict[str, Any]) -> None:
    data_dir = compose["x-hydra-env"]["HYDRA_DATA_DIR"]
    dockerfile = compose["services"]["control"]["build"]["dockerfile_inline"]
    assert f"install -d -o hydra -g hydra {data_dir}" in dockerfile  # the volume is the worker's to write
    for name, service in compose["services"].items():
        if name.startswith("worker-"):
            [mount] = [v for v in service["volumes"] if v.endswith(":" + data_dir)]
            assert mount.split(":")[0] in compose["volumes"]
