"""A highly available Redis set: one primary, its replicas and three Sentinels (issue 14, item 4).

Hydra keeps all its state in one Redis. For high availability that Redis is replicated and watched
by Redis Sentinel; every client asks the Sentinels for the current primary (a ``redis+sentinel://``
URL, :mod:`hydra_tasks.redis_conn`) and follows a failover on its own. This module is the one place
that knows how such a set is configured:

* :func:`server_conf`, :func:`sentinel_conf`, :func:`acl_header` render the configuration text
  (used by :class:`HaRedis` and by compose's ``ha-config`` service, ``python -m
  hydra_tasks.replication render DIR``): every server has an ``aclfile`` with ``default`` off (with
  every right, for the AOF's replay, as the embedded Redis) and the operator user ``hydra`` (its
  password as SHA-256), authenticates to its primary as ``hydra``
  (``masteruser``/``masterauth``), and refuses writes while fewer than ``min-replicas-to-write``
  replicas are in sync within ``min-replicas-max-lag`` seconds, so an old primary cut off from its
  replicas stops taking writes that a failover would then discard. AOF with ``appendfsync always``,
  as the single server has. Sentinels have the same two users, watch the primary as ``hydra``
  (``sentinel auth-user``/``auth-pass``) and each other too (``sentinel-user``/``sentinel-pass``).
* :class:`HaRedis` starts and stops such a set of real ``redis-server`` processes on one host (the
  tests; the netns cluster): the password lives in a 0600 file and in the 0600 configuration files
  (a Sentinel rewrites its own, so each process starts with umask 077, in a 0700 directory); it is
  never on a command line or in a log.

Volunteers' ACL users are copied to every node by ``trust/volunteers.replicate_acl``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import redis

from .errors import EmbeddedRedisError
from .redis_conn import SentinelUrl, connect
from .secrets_io import create_private, write_private

OPERATOR_USER = "hydra"
MASTER_NAME = "hydra"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class HaOptions:
    """How quickly a failover happens and what the primary demands of its replicas."""

    master_name: str = MASTER_NAME
    quorum: int = 2                       # Sentinels that must agree the primary is down
    down_after_ms: int = 5000             # silence before a Sentinel calls a server down
    failover_timeout_ms: int = 60000
    min_replicas_to_write: int = 1        # 0: an isolated primary keeps taking writes
    min_replicas_max_lag_s: int = 10
    tls: bool = False                     # TLS only (tls-port), server certificate from tls_dir
    tls_dir: str = "/tls"                 # server.pem, server.key, ca.pem
    announce_hostnames: bool = False      # Sentinels report names, not addresses (compose)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def acl_header(password: str) -> str:
    """The first lines of every data server's aclfile: ``default`` off (nobody logs in as it) but with
    every right, because Redis 7.0 replays the AOF as ``default`` and would drop every MULTI/EXEC of it
    otherwise (``embedded.DEFAULT_USER_LINE``); the operator ``hydra`` with every right."""
    from .embedded import DEFAULT_USER_LINE

    return f"{DEFAULT_USER_LINE}\nuser {OPERATOR_USER} on #{_sha256(password)} ~* &* +@all\n"


def _tls_lines(options: HaOptions, port: int, *, sentinel: bool) -> list[str]:
    if not options.tls:
        return [f"port {port}"]
    lines = ["port 0", f"tls-port {port}", f"tls-cert-file {options.tls_dir}/server.pem",
             f"tls-key-file {options.tls_dir}/server.key", f"tls-ca-cert-file {options.tls_dir}/ca.pem",
             "tls-auth-clients no", "tls-replication yes"]
    return lines


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def server_conf(options: HaOptions, password: str, *, port: int, data_dir: str, bind: str = HOST,
                replica_of: tuple[str, int] | None = None, announce: str = "") -> str:
    """redis.conf of one data server (primary or, with ``replica_of``, a replica)."""
    lines = [f"bind {bind}", *_tls_lines(options, port, sentinel=False), f"dir {_quote(data_dir)}",
             f"aclfile {_quote(data_dir.rstrip('/') + '/users.acl')}",
             "appendonly yes", "appendfsync always", "maxclients 4096",
             "hash-max-ziplist-value 512",  # a job's hash stays compact (embedded._render_conf)
             f"masteruser {OPERATOR_USER}", f"masterauth {_quote(password)}",
             f"min-replicas-to-write {options.min_replicas_to_write}",
             f"min-replicas-max-lag {options.min_replicas_max_lag_s}",
             "replica-read-only yes", "repl-diskless-sync yes", "repl-diskless-sync-delay 0"]
    if announce:
        lines.append(f"replica-announce-ip {announce}")
    if replica_of is not None:
        lines.append(f"replicaof {replica_of[0]} {replica_of[1]}")
    return "\n".join(lines) + "\n"


def sentinel_conf(options: HaOptions, password: str, *, port: int, data_dir: str, primary: tuple[str, int],
                  bind: str = HOST, announce: str = "") -> str:
    """sentinel.conf of one Sentinel (it rewrites this file as it learns the set; keep it private)."""
    name = options.master_name
    lines = [f"bind {bind}", *_tls_lines(options, port, sentinel=True), f"dir {_quote(data_dir)}",
             f"sentinel monitor {name} {primary[0]} {primary[1]} {options.quorum}",
             f"sentinel down-after-milliseconds {name} {options.down_after_ms}",
             f"sentinel failover-timeout {name} {options.failover_timeout_ms}",
             f"sentinel parallel-syncs {name} 1",
             f"sentinel auth-user {name} {OPERATOR_USER}", f"sentinel auth-pass {name} {_quote(password)}",
             f"sentinel sentinel-user {OPERATOR_USER}", f"sentinel sentinel-pass {_quote(password)}",
             "user default off resetkeys resetchannels -@all",
             f"user {OPERATOR_USER} on #{_sha256(password)} ~* &* +@all"]
    if options.announce_hostnames:
        lines += ["sentinel resolve-hostnames yes", "sentinel announce-hostnames yes"]
    if announce:
        lines.append(f"sentinel announce-ip {announce}")
    return "\n".join(lines) + "\n"


def sentinel_url(hosts: Sequence[tuple[str, int]], password: str, *, options: HaOptions = HaOptions(),
                 user: str = OPERATOR_USER, db: int = 0) -> str:
    """The operator's ``HYDRA_REDIS_URL`` for this set."""
    return SentinelUrl(tuple(hosts), options.master_name, db, user, password, options.tls).to_url()


@dataclass
class _Node:
    role: str                 # primary, replica-N, sentinel-N
    port: int
    conf: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.conf.with_suffix(".log")


@dataclass
class HaRedis:
    """A primary, ``replicas`` replicas and ``sentinels`` Sentinels of real redis-server processes on
    ``host`` (default 127.0.0.1; e.g. the control host's bridge address in a namespaced cluster), under
    ``directory`` (created 0700). Ports: ``base_port``, +1, ... (0: free ones)."""

    directory: Path
    replicas: int = 2
    sentinels: int = 3
    options: HaOptions = HaOptions()
    base_port: int = 0
    host: str = HOST
    server: str = ""          # a redis-server >= 7 (ACL selectors, TLS); "": the one embedded.find_redis7_server finds
    nodes: list[_Node] = field(default_factory=list)
    _password: str = field(default="", repr=False)

    @property
    def password(self) -> str:
        return self._password

    def start(self, *, timeout_s: float = 30.0) -> str:
        """Start every process, wait until the Sentinels see the primary and all replicas in sync;
        returns the operator's Sentinel URL."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        pw_file = self.directory / "password"
        create_private(pw_file, secrets.token_urlsafe(32))
        self._password = pw_file.read_text().strip()
        ports = self._ports(1 + self.replicas + self.sentinels)
        primary = (self.host, ports[0])
        for index, port in enumerate(ports):
            if index == 0:
                role = "primary"
            elif index <= self.replicas:
                role = f"replica-{index}"
            else:
                role = f"sentinel-{index - self.replicas}"
            home = self.directory / role
            home.mkdir(mode=0o700, exist_ok=True)
            conf = home / ("sentinel.conf" if role.startswith("sentinel") else "redis.conf")
            if role.startswith("sentinel"):
                text = sentinel_conf(self.options, self._password, port=port, data_dir=str(home), primary=primary,
                                     bind=self.host)
            else:
                acl = home / "users.acl"
                if not acl.exists():
                    write_private(acl, acl_header(self._password))
                text = server_conf(self.options, self._password, port=port, data_dir=str(home), bind=self.host,
                                   replica_of=None if index == 0 else primary)
            write_private(conf, text)
            self.nodes.append(_Node(role, port, conf))
        for node in self.nodes:
            self._spawn(node)
        self.wait_healthy(timeout_s=timeout_s)
        return self.url

    def _ports(self, count: int) -> list[int]:
        if self.base_port:
            return [self.base_port + i for i in range(count)]
        import socket

        socks, ports = [], []
        for _ in range(count):
            sock = socket.socket()
            sock.bind((self.host, 0))
            socks.append(sock)
            ports.append(int(sock.getsockname()[1]))
        for sock in socks:
            sock.close()
        return ports

    def _spawn(self, node: _Node) -> None:
        if not self.server:
            from .embedded import find_redis7_server

            self.server = find_redis7_server()
        argv = [self.server, str(node.conf)] + (["--sentinel"] if node.role.startswith("sentinel") else [])
        with open(node.log, "ab") as log:
            node.popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True, preexec_fn=lambda: os.umask(0o077))

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(self.host, n.port) for n in self.nodes if n.role.startswith("sentinel")]

    @property
    def url(self) -> str:
        return sentinel_url(self.sentinel_addresses, self._password, options=self.options)

    def node(self, role: str) -> _Node:
        return next(n for n in self.nodes if n.role == role)

    def client_of(self, port: int, **options: object) -> redis.Redis:
        """A client of one process (a data server or a Sentinel) as the operator."""
        scheme = "rediss" if self.options.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return connect(f"{scheme}://{OPERATOR_USER}:{self._password}@{host}:{port}/0",
                       ca=Path(self.options.tls_dir) / "ca.pem" if self.options.tls else None,
                       socket_timeout=2, socket_connect_timeout=2, **options)

    def primary_port(self) -> int | None:
        """The port of the server the Sentinels (a majority of those answering) name as primary."""
        votes: dict[int, int] = {}
        for _, port in self.sentinel_addresses:
            client = self.client_of(port)
            try:
                addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.options.master_name)
                if addr:
                    votes[int(addr[1])] = votes.get(int(addr[1]), 0) + 1
            except (redis.ConnectionError, redis.TimeoutError):
                continue
            finally:
                client.close()
        return max(votes, key=lambda p: votes[p]) if votes else None

    def role_of(self, port: int) -> str | None:
        return next((n.role for n in self.nodes if n.port == port), None)

    def wait_healthy(self, *, timeout_s: float = 30.0) -> None:
        """Until every live Sentinel knows the same primary, its live replicas are connected and
        every live Sentinel sees the other live Sentinels."""
        deadline = time.monotonic() + timeout_s
        last = "nothing answered"
        while time.monotonic() < deadline:
            try:
                last = self._health()
                if not last:
                    return
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise EmbeddedRedisError(f"The HA Redis set under {self.directory} is not healthy after {timeout_s:.0f} s "
                                 f"({last}); see the *.log files there.")

    def _health(self) -> str:
        live = [n for n in self.nodes if n.popen is not None and n.popen.poll() is None]
        live_data = [n for n in live if not n.role.startswith("sentinel")]
        live_sentinels = [n for n in live if n.role.startswith("sentinel")]
        port = self.primary_port()
        if port is None or port not in {n.port for n in live_data}:
            return f"the Sentinels name no live primary (they say port {port})"
        primary = self.client_of(port, decode_responses=True)
        try:
            info = primary.info("replication")
        finally:
            primary.close()
        if info.get("role") != "master":
            return f"port {port} is not a primary yet"
        if int(info.get("connected_slaves", 0)) < len(live_data) - 1:
            return f"{info.get('connected_slaves')} of {len(live_data) - 1} replicas connected"
        for node in live_sentinels:
            client = self.client_of(node.port, decode_responses=True)
            try:
                master = client.execute_command("SENTINEL", "MASTER", self.options.master_name)
            finally:
                client.close()
            state = dict(zip(master[::2], master[1::2])) if isinstance(master, list) else master
            if int(state.get("port", 0)) != port:
                return f"{node.role} still names port {state.get('port')}"
            if int(state.get("num-other-sentinels", 0)) < len(live_sentinels) - 1:
                return f"{node.role} sees {state.get('num-other-sentinels')} other Sentinels"
            if int(state.get("num-slaves", 0)) < len(live_data) - 1:
                return f"{node.role} sees {state.get('num-slaves')} replicas"
        return ""

    def kill(self, role: str, sig: int = signal.SIGKILL) -> None:
        node = self.node(role)
        if node.popen is not None and node.popen.poll() is None:
            node.popen.send_signal(sig)
            node.popen.wait(timeout=10)

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after 10 s)."""
        for node in self.nodes:
            if node.popen is not None and node.popen.poll() is None:
                node.popen.terminate()
        for node in self.nodes:
            if node.popen is not None:
                try:
                    node.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        node.popen.kill()
                    node.popen.wait(timeout=10)

    def __enter__(self) -> "HaRedis":
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


# --- compose: `python -m hydra_tasks.replication render DIR` -----------------------------------
def render(out: Path, password: str, *, replicas: Sequence[str], sentinels: Sequence[str], primary: str = "redis",
           port: int = 6379, sentinel_port: int = 26379, options: HaOptions = HaOptions()) -> list[Path]:
    """Write the configuration of a set whose hosts have names (compose services): ``<primary>.conf``,
    ``<replica>.conf`` for each replica, ``sentinel.conf`` (one copy per Sentinel; each keeps its own,
    since a Sentinel rewrites it) and ``users.acl`` (the two operator lines; the server's start script
    keeps the volunteers' users already saved in its aclfile). Every file is 0600."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    files = {f"{primary}.conf": server_conf(options, password, port=port, data_dir="/data", bind="* -::*",
                                            announce=primary),
             "sentinel.conf": sentinel_conf(options, password, port=sentinel_port, data_dir="/data",
                                            primary=(primary, port), bind="* -::*"),
             "users.acl": acl_header(password)}
    for name in replicas:
        files[f"{name}.conf"] = server_conf(options, password, port=port, data_dir="/data", bind="* -::*",
                                            replica_of=(primary, port), announce=name)
    del sentinels  # every Sentinel starts from the same file; each announces itself by its own name (hostname)
    for name, text in files.items():
        write_private(out / name, text)
        written.append(out / name)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hydra_tasks.replication",
                                     description="Render the configuration of Hydra's HA Redis set (compose).")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="write <primary>.conf, <replica>.conf, sentinel.conf and users.acl into DIR")
    r.add_argument("out", type=Path)
    r.add_argument("--replica", action="append", default=[], help="a replica's host name (repeat)")
    r.add_argument("--sentinel", action="append", default=[], help="a Sentinel's host name (repeat)")
    r.add_argument("--primary", default="redis")
    r.add_argument("--tls-dir", default="", help="TLS only, with server.pem, server.key and ca.pem from this dir")
    r.add_argument("--down-after-ms", type=int, default=5000)
    r.add_argument("--failover-timeout-ms", type=int, default=60000)
    sub.add_parser("sync-acl", help="copy the volunteers' Redis users from the primary to every replica and "
                                    "Sentinel now (HYDRA_REDIS_URL: the Sentinel URL)")
    args = parser.parse_args(argv)
    if args.command == "sync-acl":
        return _sync_acl()
    password = os.environ.get("HYDRA_REDIS_PASSWORD", "")
    if not password:
        print("error: set HYDRA_REDIS_PASSWORD (the operator's Redis password)", file=sys.stderr)
        return 2
    options = HaOptions(tls=bool(args.tls_dir), tls_dir=args.tls_dir or "/tls", announce_hostnames=True,
                        down_after_ms=args.down_after_ms, failover_timeout_ms=args.failover_timeout_ms)
    for path in render(args.out, password, replicas=args.replica or ["redis-replica"], sentinels=args.sentinel,
                       primary=args.primary, options=options):
        print(f"wrote {path}")
    return 0


def _sync_acl() -> int:
    from .celery_app import resolve_redis_url
    from .errors import HydraError
    from .redis_conn import client_for, is_sentinel
    from .settings import Settings
    from .trust.volunteers import replicate_acl

    try:
        settings = Settings.from_env()
        url = resolve_redis_url(settings)
    except HydraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not is_sentinel(url):
        print("error: HYDRA_REDIS_URL is not a Sentinel URL (redis+sentinel:// or rediss+sentinel://); a single "
              "server has no replicas to copy users to", file=sys.stderr)
        return 2
    missed = replicate_acl(client_for(settings, url, socket_timeout=5, socket_connect_timeout=5))
    for node in missed:
        print(f"not reached: {node} (run this again once it is up)", file=sys.stderr)
    print("volunteers' users copied to every replica and Sentinel" + (" reached" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
