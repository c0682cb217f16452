"""Where the local webapp listens: `hydra up` records it in the data dir, the CLI reads it.

``<data_dir>/web.json`` is ``{"url": ..., "host": ..., "port": ..., "pid": ...}`` (JSON, written
atomically). Commands that talk to the webapp (``hydra tokens ...``, ``hydra grid-info``) use
``HYDRA_URL`` if it is set, else this URL while its process runs, else ``http://127.0.0.1:5000``.
The embedded Redis is found the same way (``embedded.running_url``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psutil

from .settings import Settings

WEB_INFO_NAME = "web.json"
DEFAULT_WEB_URL = "http://127.0.0.1:5000"
_ANY_ADDRESS = {"", "0.0.0.0", "::", "[::]"}


def write_web_info(data_dir: Path, *, port: int, pid: int, host: str = "127.0.0.1", tls: bool = False) -> Path:
    """Record that the webapp of ``data_dir``'s stack listens on ``host:port`` in process ``pid``
    (over HTTPS if ``tls``)."""
    client_host = "127.0.0.1" if host in _ANY_ADDRESS else host
    if ":" in client_host and not client_host.startswith("["):
        client_host = f"[{client_host}]"  # IPv6 literal
    info = {"url": f"{'https' if tls else 'http'}://{client_host}:{int(port)}", "host": host, "port": int(port), "pid": int(pid)}
    path = Path(data_dir) / WEB_INFO_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{WEB_INFO_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)
    return path


def read_web_info(data_dir: Path) -> dict[str, Any] | None:
    """What :func:`write_web_info` recorded, or None if nothing is, it is unreadable, or its process is gone."""
    try:
        info = json.loads((Path(data_dir) / WEB_INFO_NAME).read_text())
        url, pid = info["url"], int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or not _alive(pid):
        return None
    return dict(info)


def web_url(settings: Settings) -> str:
    """The webapp the CLI talks to: HYDRA_URL, else the running local stack's, else the default."""
    if settings.web_url:
        return settings.web_url
    info = read_web_info(settings.data_dir)
    return str(info["url"]) if info else DEFAULT_WEB_URL


def _alive(pid: int) -> bool:
    try:
        return pid > 0 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
