"""Secret files (Redis password, API token, worker key) are complete or absent, never half-written.

A failing write is produced for real: the writer runs in a child process whose file-size limit
(RLIMIT_FSIZE) is 0, so its first byte of file data fails with EFBIG, as on a full disk.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hydra_tasks.embedded import _load_or_create_password
from hydra_tasks.settings import Settings
from hydra_tasks.trust import identity
from hydra_webapp.auth import load_api_token

WRITERS = {
    "redis password": "from hydra_tasks.embedded import _load_or_create_password as f; f(d / 'password')",
    "worker key": "from hydra_tasks.trust.identity import load_or_create as f; f(d / 'worker.key')",
    "api token": ("from hydra_webapp.auth import load_api_token as f; from hydra_tasks.settings import Settings; "
                  "f(Settings().with_(data_dir=d))"),
}


def _no_file_writes() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # Python ignores SIGXFSZ, so writes fail with EFBIG


def _run_with_writes_failing(data_dir: Path, statement: str) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        d = Path(sys.argv[1])
        try:
            {statement}
        except Exception as exc:
            print(type(exc).__name__, exc)
            sys.exit(3)
    """)
    return subprocess.run([sys.executable, "-c", code, str(data_dir)], capture_output=True, text=True,
                          timeout=60, preexec_fn=_no_file_writes)


@pytest.mark.parametrize("what", sorted(WRITERS))
def test_a_secret_write_that_fails_half_way_leaves_no_file_behind(tmp_path: Path, what: str) -> None:
    out = _run_with_writes_failing(tmp_path, WRITERS[what])
    assert out.returncode == 3, out.stdout + out.stderr  # the write really failed, with an exception
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither an empty secret nor a temp file


def test_after_a_failed_write_the_next_start_creates_every_secret(tmp_path: Path) -> None:
    for statement in WRITERS.values():
        _run_with_writes_failing(tmp_path, statement)
    password = _load_or_create_password(tmp_path / "password")
    key = identity.load_or_create(tmp_path / "worker.key")
    token = load_api_token(Settings().with_(data_dir=tmp_path))
    assert len(password) >= 32 and len(token.value) >= 32
    assert identity.load_key(tmp_path / "worker.key").encode() == key.encode()
    for name in ("password", "worker.key", "api_token"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600


def test_processes_creating_the_password_at_once_all_get_the_same_one(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from hydra_tasks.embedded import _load_or_create_password as f; "
            "print(f(Path(sys.argv[1])))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "password")], stdout=subprocess.PIPE,
                              text=True) for _ in range(6)]
    seen = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert seen == {(tmp_path / "password").read_text().strip()}
    assert [p.name for p in tmp_path.iterdir()] == ["password"]
