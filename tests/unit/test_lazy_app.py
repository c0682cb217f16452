"""``hydra_tasks.app`` is created on first use: light modules import without Celery, numpy or PyNaCl,
and ``celery -A hydra_tasks`` still finds the app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("celery", "kombu", "billiard", "numpy", "nacl", "redis", "psutil", "flask", "requests")


def _run(code: str, *, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _loaded_after(statements: str) -> list[str]:
    return json.loads(_run(f"import sys, json\n{statements}\n"
                           f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"))


def test_importing_keys_settings_and_models_loads_no_celery_numpy_or_nacl() -> None:
    assert _loaded_after("import hydra_tasks.keys, hydra_tasks.settings, hydra_tasks.models, hydra_tasks.errors") == []


def test_reading_the_settings_loads_neither_celery_nor_nacl() -> None:
    # (numpy and requests do load: Settings validates the carbon providers, and grid/ imports them.)
    loaded = _loaded_after("from hydra_tasks.settings import Settings\nSettings.from_env({})")
    assert not {"celery", "kombu", "nacl", "flask"} & set(loaded), loaded


def test_the_app_is_one_celery_app_even_after_its_factory_module_is_imported() -> None:
    out = _run(
        "import hydra_tasks.celery_app, hydra_tasks\n"
        "from celery.app.utils import find_app\n"
        "app = hydra_tasks.app\n"
        "from hydra_tasks import app as again\n"
        "print(type(app).__name__, app is again, find_app('hydra_tasks') is app, hydra_tasks.app is app)")
    assert out == "HydraCelery True True True"


def test_celery_command_line_finds_the_hydra_app(tmp_path: Path) -> None:
    """The real `celery -A hydra_tasks` entry point loads Hydra's configuration (JSON only, the
    task module); `report` needs no running broker."""
    celery = Path(sys.executable).with_name("celery")
    done = subprocess.run([str(celery), "-A", "hydra_tasks", "report"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "HYDRA_DATA_DIR": str(tmp_path),
                                             "HYDRA_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert done.returncode == 0, done.stderr
    assert "include: ['hydra_tasks.tasks']" in done.stdout
    assert "accept_content: ['json']" in done.stdout
    assert "task_default_queue: 'hydra.control'" in done.stdout
