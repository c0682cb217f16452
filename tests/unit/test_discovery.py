"""The CLI finds the local webapp: HYDRA_URL, else what `hydra up` recorded while it runs, else the default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hydra_tasks.discovery import DEFAULT_WEB_URL, read_web_info, web_url, write_web_info
from hydra_tasks.errors import ConfigError
from hydra_tasks.settings import Settings


def test_the_recorded_webapp_is_used_while_its_process_runs(tmp_path: Path) -> None:
    write_web_info(tmp_path, port=5123, pid=os.getpid())
    assert web_url(Settings().with_(data_dir=tmp_path)) == "http://127.0.0.1:5123"
    write_web_info(tmp_path, port=5124, pid=os.getpid(), host="0.0.0.0")  # listening everywhere: use loopback
    assert web_url(Settings().with_(data_dir=tmp_path)) == "http://127.0.0.1:5124"


def test_hydra_url_wins_over_the_recorded_webapp(tmp_path: Path) -> None:
    write_web_info(tmp_path, port=5123, pid=os.getpid())
    settings = Settings.from_env({"HYDRA_DATA_DIR": str(tmp_path), "HYDRA_URL": "https://hydra.example.org/"})
    assert web_url(settings) == "https://hydra.example.org"


def test_a_record_whose_process_is_gone_or_that_is_garbage_is_ignored(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_web_info(tmp_path, port=5123, pid=gone.pid)
    assert read_web_info(tmp_path) is None
    assert web_url(Settings().with_(data_dir=tmp_path)) == DEFAULT_WEB_URL
    (tmp_path / "web.json").write_text("{not json")
    assert web_url(Settings().with_(data_dir=tmp_path)) == DEFAULT_WEB_URL
    assert web_url(Settings().with_(data_dir=tmp_path / "nothing-here")) == DEFAULT_WEB_URL


@pytest.mark.parametrize("value", ["127.0.0.1:5000", "ftp://host", "http://"])
def test_a_bad_hydra_url_says_what_to_set(value: str) -> None:
    with pytest.raises(ConfigError, match="HYDRA_URL=.* is not a web address; set the Hydra webapp's URL"):
        Settings.from_env({"HYDRA_URL": value})


def test_a_bad_hydra_url_with_credentials_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"HYDRA_URL": "htp://user:s3cret@host"})
    assert "s3cret" not in str(info.value)
