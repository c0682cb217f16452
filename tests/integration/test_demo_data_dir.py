"""`hydra demo` deletes only what it created itself: never the data dir it is pointed at, nor a key in it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra_tasks.trust import identity


def test_the_demo_leaves_an_existing_data_dir_and_its_worker_key_as_they_were(tmp_path: Path) -> None:
    data_dir = tmp_path / "volunteer"
    key = identity.load_or_create(data_dir / "worker.key")  # a volunteer's token account
    (data_dir / "notes.txt").write_text("mine\n")
    before = {p.name: p.read_bytes() for p in data_dir.iterdir()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env.update(HYDRA_DATA_DIR=str(data_dir), COLUMNS="120")
    out = subprocess.run([sys.executable, "-m", "hydra_tasks", "demo", "--samples", "1e8", "--width", "64",
                          "--height", "48", "--max-iter", "50", "--regions", "eu-west",
                          "--out", str(tmp_path / "demo.png")], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert {p.name: p.read_bytes() for p in data_dir.iterdir()} == before  # and the demo's own files are gone
    assert identity.load_key(data_dir / "worker.key").encode() == key.encode()
