"""The embedded Redis on a full disk, and with the empty password file older versions left there.

The full disk is real: a 1 MiB tmpfs filled to the last byte (needs root to mount; skipped otherwise).
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
import redis

from hydra_tasks.embedded import EmbeddedRedis
from hydra_tasks.errors import EmbeddedRedisError


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(disk: Path) -> Path:
    """Write a filler file until the disk is full; return it."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_start_on_a_full_disk_fails_clearly_leaves_no_password_and_the_next_start_works(small_disk: Path) -> None:
    data_dir = small_disk / "redis"
    data_dir.mkdir(mode=0o700)
    filler = _fill(small_disk)
    with pytest.raises(EmbeddedRedisError, match="disk space"):
        EmbeddedRedis(data_dir).start()
    assert sorted(p.name for p in data_dir.iterdir()) == []  # no empty password, no temp file
    filler.unlink()
    with EmbeddedRedis(data_dir) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
    assert len((data_dir / "password").read_text().strip()) >= 32


def test_an_empty_password_file_left_by_an_older_version_is_replaced_at_start(tmp_path: Path) -> None:
    (tmp_path / "password").write_bytes(b"")
    with EmbeddedRedis(tmp_path) as server:
        assert redis.Redis.from_url(server.url).ping()
    assert len((tmp_path / "password").read_text().strip()) >= 32


def test_an_empty_password_file_is_not_replaced_while_its_server_still_runs(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        (tmp_path / "password").write_bytes(b"")
        with pytest.raises(EmbeddedRedisError, match=f"pid {server.pid}"):
            EmbeddedRedis(tmp_path).start()
        assert (tmp_path / "password").read_bytes() == b""
