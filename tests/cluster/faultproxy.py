#!/usr/bin/env python3
"""A small TCP fault proxy for the network-namespace test cluster (issue 14): latency, jitter, stalls,
connection resets and a blackhole partition on one volunteer's path. Standard library only (asyncio).

Why: this machine's kernel has ``tbf``/``htb`` but no ``netem`` qdisc, so bandwidth is capped with ``tc`` and
everything time-shaped comes from this proxy. In the cluster it runs inside a volunteer's network namespace::

    ip netns exec vol1 python tests/cluster/faultproxy.py --listen 127.0.0.1:0 \\
        --upstream 10.77.0.1:6380 --control /run/hydra-cluster/vol1.sock --profile WAN100

prints ``{"listening": PORT}`` on stdout once it accepts, and forwards every connection to ``--upstream``. The
volunteer's Redis client connects to ``127.0.0.1:PORT``; TLS passes through untouched (the proxy is pure TCP).

What each fault models, and what it does not
--------------------------------------------
The unit of scheduling is a **chunk**: whatever one ``read`` returned (at most 64 KiB), not a packet.

* ``delay_ms`` — one-way propagation delay, applied in each direction (a request/reply round trip gains
  ``2 * delay_ms``). A chunk read at time *now* is written out at
  ``max(previous delivery in this direction, now + delay)``, so a byte stream is never reordered.
* ``jitter_ms`` — each chunk's delay is ``delay_ms + U(-jitter_ms, +jitter_ms)`` (uniform), clipped at 0.
  Because of the ordering rule a chunk never overtakes the one before it, so back-to-back chunks inherit
  the larger delay (like a queue behind a slow packet); the mean added delay is therefore slightly above
  ``delay_ms`` under load. Per direction: a round trip varies by up to ``±2 * jitter_ms``.
* ``stall_every_s`` / ``stall_s`` — random stalls: after an exponentially distributed gap (mean
  ``stall_every_s``) nothing is forwarded on any connection in either direction for ``stall_s`` seconds; then
  the next gap starts. Data is held, never dropped; connections stay open; new connections wait before the
  proxy connects upstream. (Models a congested or flapping path that TCP rides out by retransmitting.)
* ``reset_every_s`` — random resets: after an exponentially distributed gap (mean ``reset_every_s``) one
  open connection, picked at random, is aborted on both sides with a TCP RST (``SO_LINGER`` 0). (Models a
  NAT/middlebox dropping state or a peer reboot; both ends see ``ConnectionResetError``.)
* ``down`` — a partition at the proxy that looks like a blackhole: nothing is forwarded, nothing is closed,
  and new connections are accepted by the kernel (the handshake with the local listening socket completes)
  but held unconnected upstream until ``down`` is cleared; then held data and connections proceed.
* ``rate_kbit`` — the bandwidth cap for this profile, for ``tc tbf`` on the volunteer's veth. The proxy
  ignores it unless started with ``--shape`` (a fallback where ``tc`` is missing): then it paces each
  direction, summed over all connections, at ``rate_kbit`` per 64 KiB chunk (coarse; no burst control).
* ``seed`` — seeds the stall schedule, the reset schedule and the jitter draws (three independent streams),
  so a schedule is reproducible; ``None`` draws from the OS.

Not modelled: packet loss, duplication and reordering (TCP hides them; their visible effect is delay, which
``jitter_ms`` and stalls give), per-packet timing inside a chunk, the connect handshake's round trip, MTU,
asymmetric delay, and clock effects. When one peer resets or breaks its connection, the proxy resets the other
side at once (not after the delay), dropping what it still holds for that connection. A partition by ``down`` is at the proxy only; a real partition (veth link
down) also blocks non-proxied traffic and makes upstream connects time out (``--connect-timeout``).

Runtime control
---------------
A Unix-domain socket at a filesystem path (``--control PATH``; path sockets work across network namespaces,
abstract ones do not) takes line-delimited JSON requests and answers each with one JSON line,
``{"ok": true, ...}`` or ``{"ok": false, "error": "what was wrong"}``:

* ``{"op": "profile", "profile": {...}}`` — replace the whole profile; omitted fields take their defaults (not
  their current values). ``"profile"`` may also be a named profile (``"WAN100"``). Reply: the new profile.
  The stall/reset schedules restart (with the profile's seed) only when one of their fields or the seed
  changes.
* ``{"op": "stall", "s": 5}`` — a one-off stall of ``s`` seconds starting now (extends a running stall).
* ``{"op": "reset"}`` — RST every open connection now. Reply: ``{"reset": N}``.
* ``{"op": "down"}`` / ``{"op": "up"}`` — set/clear the profile's ``down`` flag.
* ``{"op": "stats"}`` — counters (see :meth:`FaultProxy.stats`) and the current profile.

:class:`ProxyControl` is a small blocking client for that socket; :class:`ProxyProcess` runs the proxy as a
child process (optionally under a prefix such as ``ip netns exec NS``) and stops it with SIGTERM, on which the
proxy closes every connection and removes its control socket.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import math
import os
import random
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

log = logging.getLogger("faultproxy")

CHUNK = 64 * 1024
"""The most one read takes from a socket; each chunk gets one delivery time."""
MAX_BUFFERED = 2 * 1024 * 1024
"""Bytes held per connection and direction before the proxy stops reading (TCP flow control then pushes back
on the sender). Large enough for 100 Mbit/s at 150 ms one-way delay."""
MAX_CONTROL_LINE = 64 * 1024
"""Longest control request line accepted."""

MAX_DURATION = 1e6
"""Upper bound of every duration field (ms or s): catches unit mix-ups and infinities."""

_DURATION_FIELDS = ("delay_ms", "jitter_ms", "stall_every_s", "stall_s", "reset_every_s")


class ProfileError(ValueError):
    """A profile (or its JSON form) is invalid; the message names the field and what to fix."""


class ProxyControlError(RuntimeError):
    """The proxy answered a control request with an error, or could not be reached."""


@dataclass(frozen=True)
class Profile:
    """The faults applied to every connection, both directions (see the module docstring for what each models).

    Durations are numbers from 0 to :data:`MAX_DURATION`; ``0`` disables a fault. ``rate_kbit`` 0 means "no cap".
    """

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    stall_every_s: float = 0.0
    stall_s: float = 0.0
    reset_every_s: float = 0.0
    down: bool = False
    rate_kbit: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in _DURATION_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"{name} must be a number, not {value!r}")
            elif not math.isfinite(value) or not 0 <= value <= MAX_DURATION:
                problems.append(f"{name} must be a number from 0 to {MAX_DURATION:g}, not {value!r}")
            else:
                object.__setattr__(self, name, float(value))
        if not isinstance(self.down, bool):
            problems.append(f"down must be true or false, not {self.down!r}")
        if isinstance(self.rate_kbit, bool) or not isinstance(self.rate_kbit, int) or self.rate_kbit < 0:
            problems.append(f"rate_kbit must be an integer >= 0 (kbit/s; 0 = no cap), not {self.rate_kbit!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            problems.append(f"seed must be an integer or null, not {self.seed!r}")
        if not problems and self.stall_every_s > 0 and self.stall_s <= 0:
            problems.append("stall_every_s > 0 needs stall_s > 0 (how long each stall lasts)")
        if problems:
            raise ProfileError("; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        """The JSON form: a dict of every field (``Profile.from_json(p.to_json()) == p``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | str) -> Profile:
        """A profile from its JSON form (a dict; omitted fields take their defaults) or a named profile
        (``"WAN100"``, case-insensitive; see :data:`PROFILES`). Raises :class:`ProfileError` naming the problem."""
        if isinstance(raw, str):
            named = PROFILES.get(raw.upper())
            if named is None:
                raise ProfileError(f"unknown profile name {raw!r}; named profiles: {', '.join(PROFILES)}")
            return named
        if not isinstance(raw, Mapping):
            raise ProfileError(f"a profile must be a JSON object or a profile name, not {type(raw).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ProfileError(f"unknown profile field(s) {', '.join(map(repr, unknown))}; "
                               f"known fields: {', '.join(known)}")
        return cls(**raw)

    def describe(self) -> str:
        """A short human summary, e.g. ``RTT 100±20 ms, stall 1.5 s every ~45 s, 8000 kbit/s``."""
        parts = [f"RTT {2 * self.delay_ms:g}" + (f"±{2 * self.jitter_ms:g}" if self.jitter_ms else "") + " ms"]
        if self.stall_every_s:
            parts.append(f"stall {self.stall_s:g} s every ~{self.stall_every_s:g} s")
        if self.reset_every_s:
            parts.append(f"reset every ~{self.reset_every_s:g} s")
        parts.append(f"{self.rate_kbit} kbit/s" if self.rate_kbit else "no bandwidth cap")
        if self.down:
            parts.append("DOWN")
        return ", ".join(parts)


LAN = Profile()
"""Nothing added; no bandwidth cap."""
DSL = Profile(delay_ms=20, jitter_ms=5, rate_kbit=16_000)
"""RTT 40±10 ms, 16 Mbit/s."""
WAN100 = Profile(delay_ms=50, jitter_ms=10, stall_every_s=45, stall_s=1.5, rate_kbit=8_000)
"""RTT 100±20 ms, a 1.5 s stall every ~45 s (exponential gaps), 8 Mbit/s."""
SATELLITE = Profile(delay_ms=150, jitter_ms=25, rate_kbit=4_000)
"""RTT 300±50 ms, 4 Mbit/s."""
FLAKY = Profile(delay_ms=40, jitter_ms=10, stall_every_s=30, stall_s=2, reset_every_s=20, rate_kbit=2_000)
"""RTT 80±20 ms, a 2 s stall every ~30 s, one connection reset every ~20 s, 2 Mbit/s."""
PROFILES: dict[str, Profile] = {"LAN": LAN, "DSL": DSL, "WAN100": WAN100, "SATELLITE": SATELLITE, "FLAKY": FLAKY}
"""The named WAN profiles (all with ``seed=None``: use ``dataclasses.replace(WAN100, seed=n)`` for a
reproducible schedule, and different seeds per volunteer so that their stalls are independent)."""


def parse_profile(text: str) -> Profile:
    """``--profile``'s value: a profile name (``WAN100``) or a JSON object (``{"delay_ms": 50}``)."""
    text = text.strip()
    if text.startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProfileError(f"the profile is not valid JSON ({exc})") from None
        return Profile.from_json(raw)
    return Profile.from_json(text)


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as ``(host, port)``; raises ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:6380; port 0 = any free port)")
    return host.strip("[]"), int(port)


# --------------------------------------------------------------------------------------------------- the proxy


def _set_rst_on_close(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class _Pipe:
    """One direction of one connection: a FIFO of ``(delivery time, chunk)`` filled by a reader task and
    drained by a writer task. An empty chunk is end-of-stream (forwarded as a half-close)."""

    def __init__(self, direction: str) -> None:
        self.direction = direction  # "up" (client -> upstream) or "down" (upstream -> client)
        self.items: deque[tuple[float, bytes]] = deque()
        self.buffered = 0
        self.last_delivery = 0.0
        self.ready = asyncio.Event()
        self.space = asyncio.Event()


class _Conn:
    """One proxied connection: the accepted client side and (once connected) the upstream side."""

    def __init__(self, cid: int, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.id = cid
        self.client_r, self.client_w = client_r, client_w
        self.upstream_w: asyncio.StreamWriter | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closed = False
        self.peer = client_w.get_extra_info("peername")

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client_w, self.upstream_w) if w is not None]

    def abort(self, *, rst: bool) -> None:
        """Close both sides now (with a TCP RST if ``rst``) and stop this connection's tasks."""
        if self.closed:
            return
        self.closed = True
        for w in self.writers():
            if rst:
                _set_rst_on_close(w)
            w.transport.abort()
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()


class FaultProxy:
    """The proxy: listens on ``listen``, forwards each connection to ``upstream`` under :attr:`profile`, and
    (with ``control_path``) serves the control socket. Use ``await start()`` then ``await close()``."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], *, profile: Profile = LAN,
                 control_path: str | os.PathLike[str] | None = None, shape: bool = False,
                 connect_timeout_s: float = 30.0) -> None:
        self.listen, self.upstream = listen, upstream
        self.control_path = Path(control_path) if control_path is not None else None
        self.shape, self.connect_timeout_s = shape, connect_timeout_s
        self.profile = LAN
        self.port = 0
        self._server: asyncio.Server | None = None
        self._control: asyncio.Server | None = None
        self._conns: dict[int, _Conn] = {}
        self._next_id = 0
        self._up = asyncio.Event()
        self._stalled_until = 0.0
        self._jitter_rng = random.Random()
        self._schedules: list[asyncio.Task[None]] = []
        self._tx_free = {"up": 0.0, "down": 0.0}
        self._control_tasks: set[asyncio.Task[None]] = set()
        self._started = time.monotonic()
        self.counts = {"accepted": 0, "closed": 0, "reset": 0, "aborted": 0, "upstream_errors": 0,
                       "bytes_up": 0, "bytes_down": 0, "stalls": 0}
        self._stalled_total = 0.0
        self.set_profile(profile)

    # ---------------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind the listening socket (and the control socket); :attr:`port` is the actual port afterwards."""
        if self.control_path is not None:
            _claim_socket_path(self.control_path)
        self._server = await asyncio.start_server(self._accept, self.listen[0], self.listen[1],
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        self._restart_schedules()
        if self.control_path is not None:
            self._control = await asyncio.start_unix_server(self._serve_control, str(self.control_path),
                                                            limit=MAX_CONTROL_LINE)
        log.info("listening on %s:%d -> %s:%d; profile: %s", self.listen[0], self.port, *self.upstream,
                 self.profile.describe())

    async def close(self) -> None:
        """Stop accepting, close every connection and the control socket, and remove the socket file."""
        for task in self._schedules:
            task.cancel()
        if self._server is not None:
            self._server.close()
        if self._control is not None:
            self._control.close()
        for conn in list(self._conns.values()):
            conn.abort(rst=False)
        for task in list(self._control_tasks):
            task.cancel()
        if self.control_path is not None:
            try:
                if stat.S_ISSOCK(self.control_path.lstat().st_mode):
                    self.control_path.unlink()
            except OSError:
                pass  # already gone (e.g. its directory was removed)
        await asyncio.sleep(0)  # let cancelled tasks finish

    # ------------------------------------------------------------------------------------------------ faults

    def set_profile(self, profile: Profile) -> None:
        """Replace the profile (the whole of it). Chunks already scheduled keep their delivery times; the
        stall/reset schedules restart (seeded by ``profile.seed``) when their fields or the seed change."""
        old, self.profile = self.profile, profile
        if profile.down:
            self._up.clear()
        else:
            self._up.set()
        if any(getattr(old, f) != getattr(profile, f) for f in ("stall_every_s", "stall_s", "reset_every_s", "seed")):
            self._restart_schedules()
        if profile != old and self._server is not None:
            log.info("profile: %s", profile.describe())

    def _restart_schedules(self) -> None:
        for task in self._schedules:
            task.cancel()
        self._schedules = []
        profile = self.profile
        self._jitter_rng = _rng(profile.seed, "jitter")
        if self._server is None:
            return  # not started: start() calls this again
        for kind, mean in (("stall", profile.stall_every_s), ("reset", profile.reset_every_s)):
            if mean > 0:
                self._schedules.append(asyncio.create_task(self._schedule(profile, kind)))

    def stall(self, seconds: float) -> None:
        """Forward nothing, on any connection, for ``seconds`` from now (extends a running stall)."""
        now = asyncio.get_running_loop().time()
        until = now + seconds
        if until > self._stalled_until:
            self._stalled_total += until - max(now, self._stalled_until)
            self._stalled_until = until
        self.counts["stalls"] += 1
        log.info("stall %.3g s", seconds)

    def reset_all(self) -> int:
        """RST every open connection now; returns how many."""
        conns = list(self._conns.values())
        for conn in conns:
            self._reset(conn)
        return len(conns)

    def _reset(self, conn: _Conn) -> None:
        if conn.closed:
            return
        log.info("reset connection %d from %s", conn.id, conn.peer)
        self.counts["reset"] += 1
        conn.abort(rst=True)
        self._conns.pop(conn.id, None)

    async def _schedule(self, profile: Profile, kind: str) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        pick = _rng(profile.seed, "reset-pick")  # separate, so that the times do not depend on the traffic
        for offset in fault_times(profile, kind):
            await asyncio.sleep(max(0.0, began + offset - loop.time()))
            if kind == "stall":
                self.stall(profile.stall_s)
            elif self._conns:
                self._reset(self._conns[pick.choice(sorted(self._conns))])

    async def _hold_until(self, when: float) -> None:
        """Return at ``when`` or later, once the proxy is neither down nor stalled."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if now < when:
                await asyncio.sleep(when - now)
            elif not self._up.is_set():
                await self._up.wait()
            elif now < self._stalled_until:
                await asyncio.sleep(self._stalled_until - now)
            else:
                return

    def _delivery_time(self, pipe: _Pipe, size: int) -> float:
        now = asyncio.get_running_loop().time()
        p = self.profile
        delay = p.delay_ms / 1000.0
        if p.jitter_ms:
            delay = max(0.0, delay + self._jitter_rng.uniform(-p.jitter_ms, p.jitter_ms) / 1000.0)
        start = now
        if self.shape and p.rate_kbit and size:
            start = max(now, self._tx_free[pipe.direction]) + size * 8 / (p.rate_kbit * 1000.0)
            self._tx_free[pipe.direction] = start
        pipe.last_delivery = max(pipe.last_delivery, start + delay)
        return pipe.last_delivery

    # ------------------------------------------------------------------------------------------- forwarding

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._next_id += 1
        conn = _Conn(self._next_id, reader, writer)
        self._conns[conn.id] = conn
        self.counts["accepted"] += 1
        log.debug("connection %d from %s", conn.id, conn.peer)
        _set_nodelay(writer)
        # A separate task: the streams' callback task must not be cancelled (3.11 logs that as an error).
        task = asyncio.create_task(self._run(conn))
        conn.tasks.add(task)

    async def _run(self, conn: _Conn) -> None:
        try:
            await self._hold_until(0.0)  # while down or stalled, hold the new connection unconnected
            try:
                upstream_r, upstream_w = await asyncio.wait_for(asyncio.open_connection(*self.upstream),
                                                                self.connect_timeout_s)
            except (TimeoutError, OSError) as exc:
                self.counts["upstream_errors"] += 1
                log.warning("connection %d: cannot reach upstream %s:%d (%s); resetting the client",
                            conn.id, *self.upstream, exc or "timeout")
                conn.abort(rst=True)
                return
            if conn.closed:  # reset while connecting
                _set_rst_on_close(upstream_w)
                upstream_w.transport.abort()
                return
            conn.upstream_w = upstream_w
            _set_nodelay(upstream_w)
            up, down = _Pipe("up"), _Pipe("down")
            tasks = [asyncio.create_task(self._read(conn, up, conn.client_r)),
                     asyncio.create_task(self._write(conn, up, upstream_w)),
                     asyncio.create_task(self._read(conn, down, upstream_r)),
                     asyncio.create_task(self._write(conn, down, conn.client_w))]
            conn.tasks.update(tasks)
            await asyncio.wait(tasks)
            if not conn.closed:  # both directions ended with a half-close each: a clean close
                conn.closed = True
                self.counts["closed"] += 1
                for w in conn.writers():
                    w.close()
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.pop(conn.id, None)

    async def _read(self, conn: _Conn, pipe: _Pipe, src: asyncio.StreamReader) -> None:
        try:
            while True:
                while pipe.buffered >= MAX_BUFFERED:
                    pipe.space.clear()
                    await pipe.space.wait()
                data = await src.read(CHUNK)
                pipe.items.append((self._delivery_time(pipe, len(data)), data))
                pipe.buffered += len(data)
                pipe.ready.set()
                if not data:
                    return
        except (OSError, asyncio.IncompleteReadError) as exc:
            self._peer_failed(conn, pipe, exc)

    async def _write(self, conn: _Conn, pipe: _Pipe, dst: asyncio.StreamWriter) -> None:
        key = "bytes_up" if pipe.direction == "up" else "bytes_down"
        try:
            while True:
                while not pipe.items:
                    pipe.ready.clear()
                    await pipe.ready.wait()
                when, data = pipe.items[0]
                await self._hold_until(when)
                pipe.items.popleft()
                pipe.buffered -= len(data)
                pipe.space.set()
                if not data:
                    if dst.can_write_eof() and not dst.is_closing():
                        dst.write_eof()
                    return
                dst.write(data)
                self.counts[key] += len(data)
                await dst.drain()
        except OSError as exc:
            self._peer_failed(conn, pipe, exc)

    def _peer_failed(self, conn: _Conn, pipe: _Pipe, exc: BaseException) -> None:
        """One side broke (reset, broken pipe): pass the failure on to the other side as a RST."""
        if not conn.closed:
            log.info("connection %d (%s): %s; resetting both sides", conn.id, pipe.direction,
                     type(exc).__name__)
            self.counts["aborted"] += 1
            conn.abort(rst=True)
            self._conns.pop(conn.id, None)

    # ---------------------------------------------------------------------------------------------- control

    def stats(self) -> dict[str, Any]:
        """Counters since start: connections ``accepted``, ``open`` now, ``closed`` cleanly, ``reset`` by the
        proxy (schedule or control), ``aborted`` (a peer reset/broke, passed on), ``upstream_errors``;
        ``bytes_up`` (client -> upstream) and ``bytes_down`` delivered; ``stalls`` begun and ``stalled_s`` total;
        ``stalled_now``, ``down``, ``held`` (connections waiting to connect upstream), ``port``, ``profile``."""
        now = asyncio.get_running_loop().time()
        return {**self.counts, "open": len(self._conns), "stalled_s": round(self._stalled_total, 3),
                "stalled_now": now < self._stalled_until, "down": self.profile.down,
                "held": sum(1 for c in self._conns.values() if c.upstream_w is None),
                "port": self.port, "uptime_s": round(time.monotonic() - self._started, 3),
                "profile": self.profile.to_json()}

    def handle(self, request: Any) -> dict[str, Any]:
        """Answer one control request (already parsed from JSON); raises ValueError naming the problem."""
        if not isinstance(request, dict):
            raise ValueError(f"a request must be a JSON object like {{\"op\": \"stats\"}}, not {request!r}")
        op = request.get("op")
        if op not in ("profile", "stall", "reset", "down", "up", "stats"):
            raise ValueError(f"unknown op {op!r}; ops: profile, stall, reset, down, up, stats")
        extra = sorted(set(request) - {"op", *{"profile": ["profile"], "stall": ["s"]}.get(op, [])})
        if extra:
            raise ValueError(f"op {op!r} takes no field(s) {', '.join(map(repr, extra))}")
        if op == "profile":
            if "profile" not in request:
                raise ValueError('op "profile" needs "profile": an object of profile fields or a profile name')
            self.set_profile(Profile.from_json(request["profile"]))
            return {"profile": self.profile.to_json()}
        if op == "stall":
            s = request.get("s")
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= MAX_DURATION:
                raise ValueError(f'op "stall" needs "s": a number of seconds > 0 and <= {MAX_DURATION:g}, not {s!r}')
            self.stall(float(s))
            return {}
        if op == "reset":
            return {"reset": self.reset_all()}
        if op in ("down", "up"):
            self.set_profile(dataclasses.replace(self.profile, down=op == "down"))
            return {"down": self.profile.down}
        return self.stats()

    async def _serve_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._control_tasks.add(task)
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    if not exc.partial.strip():
                        return
                    line = exc.partial  # a last request without a newline
                except asyncio.LimitOverrunError:
                    writer.write(_reply_error(f"request line longer than {MAX_CONTROL_LINE} bytes"))
                    await writer.drain()
                    return
                if not line.strip():
                    continue
                try:
                    request = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    writer.write(_reply_error(f"request is not valid JSON ({exc}); send one JSON object per line"))
                else:
                    try:
                        reply = {"ok": True, **self.handle(request)}
                    except Exception as exc:  # bad input (ValueError, ProfileError): reply, keep serving
                        log.warning("control: refused %r: %s", line[:200], exc)
                        writer.write(_reply_error(str(exc) if isinstance(exc, ValueError)
                                                  else f"{type(exc).__name__}: {exc}"))
                    else:
                        writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._control_tasks.discard(task)
            writer.close()


def fault_times(profile: Profile, kind: str) -> Iterator[float]:
    """When the profile's random stalls (``kind="stall"``) or resets (``"reset"``) begin: offsets in seconds from
    the moment the profile took effect, endless (empty if that fault is off). The proxy follows exactly this
    schedule, so with a ``seed`` it is reproducible and can be printed or compared. Gaps are exponential with
    mean ``stall_every_s`` / ``reset_every_s``; a stall's gap starts when the previous stall ends."""
    if kind not in ("stall", "reset"):
        raise ValueError(f"kind must be 'stall' or 'reset', not {kind!r}")
    mean = profile.stall_every_s if kind == "stall" else profile.reset_every_s
    if mean <= 0:
        return
    rng = _rng(profile.seed, kind)
    t = 0.0
    while True:
        t += rng.expovariate(1.0 / mean)
        yield t
        if kind == "stall":
            t += profile.stall_s


def _reply_error(message: str) -> bytes:
    return json.dumps({"ok": False, "error": message}).encode() + b"\n"


def _rng(seed: int | None, stream: str) -> random.Random:
    return random.Random(f"{seed}/{stream}") if seed is not None else random.Random()


def _claim_socket_path(path: Path) -> None:
    """Remove a stale socket file at ``path``; refuse if a live proxy answers there or it is not a socket."""
    if len(os.fsencode(path)) >= 108:
        raise ValueError(f"control socket path {str(path)!r} is too long for a Unix socket (107 bytes at most)")
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ValueError(f"control path {str(path)!r} exists and is not a socket; choose another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody listens: left over from a killed proxy
    else:
        raise ValueError(f"another process is serving control socket {str(path)!r}")
    finally:
        probe.close()


# ------------------------------------------------------------------------------------------------ the client


class ProxyControl:
    """A blocking client for a proxy's control socket, usable from any process (and network namespace) that can
    open the socket's path. Each call is one request on a fresh connection; errors raise
    :class:`ProxyControlError` with the proxy's message."""

    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float = 5.0) -> None:
        self.path, self.timeout_s = str(path), timeout_s

    def request(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """Send one request, return the reply (without ``ok``)."""
        data = json.dumps(dict(message)).encode() + b"\n"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout_s)
                sock.connect(self.path)
                sock.sendall(data)
                buf = b""
                while not buf.endswith(b"\n"):
                    part = sock.recv(65536)
                    if not part:
                        break
                    buf += part
        except OSError as exc:
            raise ProxyControlError(f"cannot talk to the fault proxy at {self.path}: {exc}") from exc
        if not buf:
            raise ProxyControlError(f"the fault proxy at {self.path} closed the control connection without a reply")
        reply = json.loads(buf)
        if not reply.pop("ok", False):
            raise ProxyControlError(reply.get("error", f"error reply {reply!r}"))
        return dict(reply)

    def set_profile(self, profile: Profile | Mapping[str, Any] | str | None = None, **fields: Any) -> Profile:
        """Replace the proxy's whole profile: a :class:`Profile`, its JSON dict, a name (``"WAN100"``), or fields
        as keyword arguments (``set_profile(delay_ms=50)``; the rest take their defaults). Returns the profile
        the proxy now applies."""
        if profile is None:
            raw: Any = fields
        elif fields:
            raise TypeError("pass a profile or keyword fields, not both")
        else:
            raw = profile.to_json() if isinstance(profile, Profile) else profile
        return Profile.from_json(self.request({"op": "profile", "profile": raw})["profile"])

    def stall(self, s: float) -> None:
        """A one-off stall of ``s`` seconds, starting now."""
        self.request({"op": "stall", "s": s})

    def reset_all(self) -> int:
        """RST every open connection; returns how many were reset."""
        return int(self.request({"op": "reset"})["reset"])

    def down(self) -> None:
        """Blackhole: forward nothing, hold new connections, close nothing."""
        self.request({"op": "down"})

    def up(self) -> None:
        """End a ``down``: held data and connections proceed."""
        self.request({"op": "up"})

    def stats(self) -> dict[str, Any]:
        """The counters described in :meth:`FaultProxy.stats`."""
        return self.request({"op": "stats"})


class ProxyProcess:
    """Runs this file as a child process: ``with ProxyProcess(upstream, control) as proxy: proxy.port ...``.

    ``prefix`` goes before the interpreter, e.g. ``("ip", "netns", "exec", "vol1")`` (``ip netns exec`` execs the
    command, so SIGTERM to :attr:`proc` reaches the proxy). ``listen`` is in the proxy's namespace. ``log`` receives
    the proxy's stderr (default: inherited)."""

    def __init__(self, upstream: str, control: str | os.PathLike[str], *, listen: str = "127.0.0.1:0",
                 profile: Profile | str | None = None, prefix: Sequence[str] = (), python: str = sys.executable,
                 shape: bool = False, log: IO[Any] | None = None, log_level: str = "INFO") -> None:
        self.argv = [*prefix, python, str(Path(__file__).resolve()), "--listen", listen, "--upstream", upstream,
                     "--control", str(control), "--log-level", log_level]
        if profile is not None:
            self.argv += ["--profile", json.dumps(profile.to_json()) if isinstance(profile, Profile) else profile]
        if shape:
            self.argv.append("--shape")
        self.control = ProxyControl(control)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, *, timeout_s: float = 15.0) -> ProxyProcess:
        """Start the proxy and wait for its ``{"listening": port}`` line."""
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log)
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                self.stop()
                raise ProxyControlError(f"the fault proxy did not report its port within {timeout_s} s: {self.argv}")
            part = os.read(fd, 4096)
            if not part:
                code = self.proc.wait()
                raise ProxyControlError(f"the fault proxy exited with {code} before listening: {self.argv}")
            line += part
        self.port = int(json.loads(line)["listening"])
        return self

    def stop(self, *, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, wait (then SIGKILL after ``timeout_s``); returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> ProxyProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -------------------------------------------------------------------------------------------------- the script


async def _serve(args: argparse.Namespace, profile: Profile) -> None:
    proxy = FaultProxy(args.listen, args.upstream, profile=profile, control_path=args.control, shape=args.shape,
                       connect_timeout_s=args.connect_timeout)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await proxy.start()
        print(json.dumps({"listening": proxy.port}), flush=True)
        await stop.wait()
        log.info("stopping: %s", json.dumps({k: v for k, v in proxy.stats().items() if k != "profile"}))
    finally:
        await proxy.close()


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_DURATION:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; see ``--help``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Named profiles: " + "; ".join(f"{n}: {p.describe()}"
                                                                           for n, p in PROFILES.items()))
    parser.add_argument("--listen", type=parse_hostport, default=("127.0.0.1", 0), metavar="HOST:PORT",
                        help="where to accept connections (port 0 = a free port; default 127.0.0.1:0)")
    parser.add_argument("--upstream", type=parse_hostport, required=True, metavar="HOST:PORT",
                        help="where to forward each connection")
    parser.add_argument("--control", metavar="PATH", help="Unix socket path for runtime control (see module doc)")
    parser.add_argument("--profile", default="LAN", metavar="NAME|JSON",
                        help=f"starting profile: one of {', '.join(PROFILES)} or a JSON object (default LAN)")
    parser.add_argument("--shape", action="store_true",
                        help="also pace each direction at the profile's rate_kbit (fallback where tc is missing)")
    parser.add_argument("--connect-timeout", type=_positive_seconds, default=30.0, metavar="S",
                        help="give up connecting upstream after S seconds and reset the client (default 30)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    try:
        profile = parse_profile(args.profile)
    except ProfileError as exc:
        parser.error(f"--profile: {exc}")
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format=f"%(asctime)s faultproxy[{os.getpid()}] %(levelname)s %(message)s")
    try:
        asyncio.run(_serve(args, profile))
    except (OSError, ValueError) as exc:
        print(f"faultproxy: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
