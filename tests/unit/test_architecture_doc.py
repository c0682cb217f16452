"""ARCHITECTURE.md stays true where that is cheap to check: its module map lists exactly the source
files there are, and every setting it names exists."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from hydra_tasks.settings import _IGNORED, _REMOVED, Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "ARCHITECTURE.md"
REPO_DIRS = ("hydra_tasks", "webapp", "kernels")


def _section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def mapped_files() -> set[str]:
    """Repo paths named in the first column of the module map (see the rule above the table)."""
    out: set[str] = set()
    for line in _section("Module map").splitlines():
        if not line.startswith("| `"):
            continue
        directory = ""
        for name in re.findall(r"`([^`]+)`", line.split("|")[1]):
            if name.endswith("/"):
                continue  # a directory of templates or static files
            if "/" in name:
                directory, name = name.rsplit("/", 1)
            path = f"{directory}/{name}" if directory else name
            out.add(path if path.split("/")[0] in REPO_DIRS else f"hydra_tasks/{path}")
    return out


def source_files() -> set[str]:
    found = [*ROOT.glob("hydra_tasks/**/*.py"), *ROOT.glob("hydra_tasks/**/*.pyi"), *ROOT.glob("webapp/*.py"),
             *ROOT.glob("kernels/*.pyx"), *ROOT.glob("kernels/*.py")]
    return {p.relative_to(ROOT).as_posix() for p in found}


def test_the_module_map_lists_every_source_file_and_no_other() -> None:
    mapped, actual = mapped_files(), source_files()
    assert sorted(actual - mapped) == [], "files missing from ARCHITECTURE.md's module map"
    assert sorted(mapped - actual) == [], "ARCHITECTURE.md's module map names files that do not exist"


def test_every_setting_the_architecture_names_exists() -> None:
    # HYDRA_REDIS_PASSWORD: compose's secret for its Redis operator user;
    # HYDRA_TEST_ARTIFACTS: the test suite's screenshot directory (settings._IGNORED)
    # ... and settings removed on purpose, which the doc explains (settings._REMOVED refuses them with the reason)
    known = ({f.metadata["spec"].env for f in fields(Settings)} | {"HYDRA_REDIS_PASSWORD"}
             | set(_REMOVED) | set(_IGNORED))
    named = set(re.findall(r"HYDRA_[A-Z][A-Z0-9_]*", DOC.read_text(encoding="utf-8")))
    assert sorted(named - known) == []


def test_the_architecture_keeps_the_sections_the_lead_fills_in() -> None:
    for title in ("The state layer (Redis keys and Lua scripts)", "Operations: hydra up supervision"):
        assert _section(title).strip()
