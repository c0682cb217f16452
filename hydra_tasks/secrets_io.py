"""Writing secret files (passwords, API tokens, worker keys) so that a failure never leaves half a file.

Both helpers write the whole text to a private temporary file next to the target (mode 0600),
``fsync`` it, and only then put it in place in one atomic step. If anything fails half-way
(a full disk, a file-size limit, Ctrl-C), the temporary file is removed and the target is
untouched: it is either absent, or complete.

- :func:`write_private` replaces the target (``rename``), for files Hydra rewrites on every start;
- :func:`create_private` creates the target only if it does not exist yet (``link``, which
  fails if the name is taken), so two processes starting at once end up with one secret that
  both use.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PRIVATE_MODE = 0o600


def write_private(path: Path, text: str) -> None:
    """Atomically write ``text`` to ``path`` (mode 0600), replacing any previous file.

    Raises OSError (e.g. ENOSPC) with ``path`` unchanged and no temporary file left behind.
    """
    tmp = _write_temp(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def create_private(path: Path, text: str) -> bool:
    """Atomically create ``path`` (mode 0600) holding ``text``, unless it exists already.

    True if this call created it; False if a file was already there (then it is not changed).
    Raises OSError with no file created and no temporary file left behind.
    """
    tmp = _write_temp(path, text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return True


def _write_temp(path: Path, text: str) -> Path:
    """A complete, fsynced private copy of ``text`` in ``path``'s directory; removed again on any error."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    try:
        try:
            os.fchmod(fd, PRIVATE_MODE)  # whatever the umask
            data = memoryview(text.encode())
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _fsync_dir(directory: Path) -> None:
    """Make the new directory entry itself durable (best effort: not every platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
