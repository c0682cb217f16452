"""The cluster's TCP fault proxy (tests/cluster/faultproxy.py), run as a real child process in front of a real echo
server on 127.0.0.1, as the netns cluster runs it: bytes pass unchanged, delay/jitter/stalls/resets/partitions do
what they say, runtime control works and refuses bad input, SIGTERM leaves nothing behind. Loopback only; no root.

Timing bounds are generous on purpose (2 busy cores): lower bounds are what the fault guarantees, upper bounds
only catch "much too slow"."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import faultproxy
from faultproxy import PROFILES, Profile, ProfileError, ProxyControl, ProxyControlError, ProxyProcess

pytestmark = pytest.mark.integration

SCRIPT = Path(faultproxy.__file__).resolve()


# ------------------------------------------------------------------------------------------------ the upstream


class _EchoHandler(socketserver.BaseRequestHandler):
    server: EchoServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        with self.server.lock:
            self.server.accepted += 1
        try:
            while data := sock.recv(65536):
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # pass the client's half-close back
        except ConnectionResetError:
            with self.server.lock:
                self.server.resets += 1
        except OSError:
            pass


class EchoServer(socketserver.ThreadingTCPServer):
    """Echoes every byte back; counts the connections it accepted and those that ended in a reset."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.lock = threading.Lock()
        self.accepted = 0
        self.resets = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="echo", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory for control sockets (a Unix socket path must fit in 107 bytes; tmp_path may not);
    must be empty at the end: the proxy leaves no files behind."""
    path = Path(tempfile.mkdtemp(prefix="fp-"))
    yield path
    leftovers = sorted(p.name for p in path.iterdir())
    shutil.rmtree(path)
    assert leftovers == [], "the fault proxy left files behind"


@pytest.fixture
def start_proxy(echo: EchoServer, sockdir: Path, tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    """``start_proxy(profile=None, upstream=None, shape=False)``: a running proxy process in front of ``echo``."""
    started: list[tuple[ProxyProcess, Path]] = []

    def start(profile: Profile | str | None = None, *, upstream: str | None = None, shape: bool = False) -> ProxyProcess:
        n = len(started)
        log_path = tmp_path / f"proxy{n}.log"
        with log_path.open("wb") as log:
            proxy = ProxyProcess(upstream or echo.address, sockdir / f"p{n}.sock", profile=profile, shape=shape,
                                 log=log, log_level="DEBUG")
            started.append((proxy, log_path))
            return proxy.start()

    try:
        yield start
    finally:
        for proxy, log_path in started:
            code = proxy.stop()
            print(f"----- proxy log ({log_path.name}, exit {code}) -----\n{log_path.read_text()[-4000:]}")


def connect(port: int, *, timeout_s: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(min(65536, n - len(buf)))
        if not part:
            raise EOFError(f"connection closed after {len(buf)} of {n} bytes")
        buf += part
    return bytes(buf)


def round_trip(sock: socket.socket, message: bytes) -> float:
    """Send ``message``, read its echo, return the seconds it took (and check the echo)."""
    started = time.monotonic()
    sock.sendall(message)
    assert recv_exactly(sock, len(message)) == message
    return time.monotonic() - started


def wait_for(predicate: Callable[[], Any], *, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)
    return result


# -------------------------------------------------------------------------------------------- pass-through


def test_a_megabyte_each_way_passes_unchanged_on_many_connections_at_once(
        start_proxy: Callable[..., ProxyProcess]) -> None:
    proxy = start_proxy(Profile(delay_ms=5, jitter_ms=5, seed=1))
    connections, size = 8, 1_000_000

    def exchange(i: int) -> tuple[str, str]:
        payload = os.urandom(size)
        with connect(proxy.port) as sock:
            def send() -> None:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=send)
            sender.start()
            received = bytearray()
            while part := sock.recv(65536):  # until the echo server's half-close comes back through the proxy
                received += part
            sender.join()
        return hashlib.sha256(payload).hexdigest(), hashlib.sha256(received).hexdigest()

    with ThreadPoolExecutor(connections) as pool:
        for sent, got in pool.map(exchange, range(connections)):
            assert got == sent

    stats = wait_for(lambda: (s := proxy.control.stats())["closed"] == connections and s,
                     timeout_s=10, what="every connection to close cleanly")
    assert stats["accepted"] == connections and stats["open"] == 0
    assert stats["bytes_up"] == stats["bytes_down"] == connections * size
    assert stats["reset"] == stats["aborted"] == 0


# ------------------------------------------------------------------------------------------- delay, jitter


def test_delay_adds_twice_the_one_way_delay_to_each_round_trip(start_proxy: Callable[..., ProxyProcess]) -> None:
    delay = 0.1
    proxy = start_proxy(Profile(delay_ms=delay * 1000))
    with connect(proxy.port) as sock:
        times = [round_trip(sock, b"ping %d\n" % i) for i in range(5)]
        assert all(2 * delay <= t < 2 * delay + 1.0 for t in times), times
        # 200 kB in 64 KiB chunks: one delay per direction plus transfer, not a timer per byte or packet
        big = os.urandom(200_000)
        assert 2 * delay <= round_trip(sock, big) < 2 * delay + 1.0

    # the delay follows a profile change at runtime
    proxy.control.set_profile(delay_ms=0)
    with connect(proxy.port) as sock:
        round_trip(sock, b"warm-up")
        assert min(round_trip(sock, b"ping") for _ in range(5)) < delay


def test_jitter_never_reorders_a_stream(start_proxy: Callable[..., ProxyProcess]) -> None:
    # per-chunk delays drawn from 0..30 ms: a later chunk often draws a shorter delay than the one before it
    proxy = start_proxy(Profile(delay_ms=15, jitter_ms=15, seed=7))
    records = [b"%08d\n" % i for i in range(1500)]
    with connect(proxy.port) as sock:
        def send() -> None:
            for i in range(0, len(records), 3):
                sock.sendall(b"".join(records[i:i + 3]))
                time.sleep(0.001)  # separate writes, so the proxy reads many separate chunks
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        received = bytearray()
        while part := sock.recv(65536):
            received += part
        sender.join()
    assert bytes(received).splitlines(keepends=True) == records


# ------------------------------------------------------------------------------------------------- stalls


def test_a_stall_holds_data_for_about_its_length_and_loses_nothing(start_proxy: Callable[..., ProxyProcess]) -> None:
    proxy = start_proxy()
    with connect(proxy.port) as sock:
        assert round_trip(sock, b"before") < 1.0
        payload = os.urandom(100_000)
        proxy.control.stall(1.5)
        took = round_trip(sock, payload)
        assert 1.4 <= took < 1.5 + 2.0, took
        assert round_trip(sock, b"after") < 1.0
    stats = proxy.control.stats()
    assert stats["stalls"] == 1 and 1.49 <= stats["stalled_s"] <= 1.51
    assert stats["reset"] == stats["aborted"] == 0


def test_random_stalls_follow_the_seeded_schedule_delay_but_never_drop(
        start_proxy: Callable[..., ProxyProcess]) -> None:
    profile = Profile(stall_every_s=0.3, stall_s=0.4, seed=11)
    proxy = start_proxy(profile)
    began = time.monotonic()  # the schedule began a little before: when the proxy started listening
    payloads = [os.urandom(2_000) for _ in range(4)]
    times: list[float] = []
    with connect(proxy.port) as sock:
        while time.monotonic() - began < 3.0:
            times.extend(round_trip(sock, p) for p in payloads)  # round_trip checks every echoed byte
    before = time.monotonic() - began
    stats = proxy.control.stats()
    after = time.monotonic() - began
    schedule = list(itertools.takewhile(lambda t: t < 10, faultproxy.fault_times(profile, "stall")))
    assert sum(t <= before - 0.3 for t in schedule) <= stats["stalls"] <= sum(t <= after + 0.5 for t in schedule)
    assert stats["stalls"] >= 2 and stats["reset"] == stats["aborted"] == 0
    assert max(times) >= 0.2, "no round trip was held by a stall"


def test_fault_schedules_are_reproducible_from_the_seed() -> None:
    def first(profile: Profile, kind: str, n: int = 50) -> list[float]:
        return list(itertools.islice(faultproxy.fault_times(profile, kind), n))

    wan = dataclasses.replace(PROFILES["FLAKY"], seed=1)
    assert first(wan, "stall") == first(dataclasses.replace(wan, delay_ms=1), "stall")
    assert first(wan, "stall") != first(dataclasses.replace(wan, seed=2), "stall")
    assert first(wan, "stall") != first(wan, "reset")  # independent streams
    gaps = [b - a for a, b in itertools.pairwise([0.0, *first(wan, "reset", 2000)])]
    assert 0.8 * wan.reset_every_s < sum(gaps) / len(gaps) < 1.2 * wan.reset_every_s
    stalls = first(wan, "stall", 2000)
    assert all(b - a > wan.stall_s for a, b in itertools.pairwise(stalls)), "stalls overlap"
    assert first(PROFILES["DSL"], "stall") == [] and first(PROFILES["DSL"], "reset") == []


# ------------------------------------------------------------------------------------------------- resets


def test_reset_aborts_open_connections_with_rst_and_the_proxy_keeps_accepting(
        start_proxy: Callable[..., ProxyProcess], echo: EchoServer) -> None:
    proxy = start_proxy()
    socks = [connect(proxy.port) for _ in range(3)]
    try:
        for sock in socks:
            round_trip(sock, b"hello")
        assert proxy.control.reset_all() == 3
        for sock in socks:
            with pytest.raises(ConnectionResetError):
                sock.recv(10)
        wait_for(lambda: echo.resets == 3, timeout_s=5, what="the upstream side to see 3 resets")
    finally:
        for sock in socks:
            sock.close()
    with connect(proxy.port) as sock:
        assert round_trip(sock, b"still here") < 1.0
        stats = proxy.control.stats()
    assert stats["reset"] == 3 and stats["accepted"] == 4 and stats["open"] == 1


def test_random_resets_from_the_profile_break_connections_with_an_error(
        start_proxy: Callable[..., ProxyProcess]) -> None:
    proxy = start_proxy(Profile(reset_every_s=0.3, seed=3))
    broken = 0
    deadline = time.monotonic() + 8.0
    while broken < 2 and time.monotonic() < deadline:
        with connect(proxy.port) as sock:
            try:
                while time.monotonic() < deadline:
                    round_trip(sock, b"x" * 100)
            except (ConnectionResetError, BrokenPipeError):
                broken += 1
    assert broken == 2
    assert proxy.control.stats()["reset"] >= 2


def test_an_unreachable_upstream_resets_the_client_and_the_proxy_keeps_running(
        start_proxy: Callable[..., ProxyProcess]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    proxy = start_proxy(upstream=dead)
    with connect(proxy.port) as sock:
        with pytest.raises(ConnectionResetError):
            sock.sendall(b"anyone?")
            sock.recv(10)
    stats = wait_for(lambda: (s := proxy.control.stats())["upstream_errors"] == 1 and s, timeout_s=5,
                     what="the upstream error to be counted")
    assert stats["open"] == 0


# ---------------------------------------------------------------------------------------------- partition


def test_down_is_a_blackhole_that_closes_nothing_and_up_delivers_what_was_held(
        start_proxy: Callable[..., ProxyProcess], echo: EchoServer) -> None:
    proxy = start_proxy()
    with connect(proxy.port) as old, connect(proxy.port) as _:
        round_trip(old, b"before")
        proxy.control.down()
        old.sendall(b"held on an open connection")
        with connect(proxy.port) as new:  # accepted locally, but not connected upstream while down
            new.sendall(b"held on a new connection")
            for sock in (old, new):
                sock.settimeout(1.0)
                with pytest.raises(TimeoutError):  # no data and no EOF: nothing passes, nothing closes
                    sock.recv(100)
            stats = proxy.control.stats()
            assert stats["down"] is True and stats["held"] == 1 and stats["open"] == 3
            assert stats["reset"] == stats["aborted"] == stats["closed"] == 0
            assert echo.accepted == 2, "the proxy connected upstream while down"

            proxy.control.up()
            for sock, expected in ((old, b"held on an open connection"), (new, b"held on a new connection")):
                sock.settimeout(10.0)
                assert recv_exactly(sock, len(expected)) == expected
            assert round_trip(new, b"after") < 1.0
    assert proxy.control.stats()["down"] is False


# ---------------------------------------------------------------------------------------------- bandwidth


def test_shape_paces_each_direction_at_rate_kbit(start_proxy: Callable[..., ProxyProcess]) -> None:
    proxy = start_proxy(Profile(rate_kbit=1600), shape=True)  # 200 kB/s
    with connect(proxy.port) as sock:
        round_trip(sock, b"warm-up")
        payload = os.urandom(200_000)
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        started = time.monotonic()
        sender.start()
        assert recv_exactly(sock, len(payload)) == payload
        took = time.monotonic() - started
        sender.join()
    assert 0.9 <= took < 5.0, took


# ----------------------------------------------------------------------------------------- profile, control


def test_profiles_round_trip_through_json_and_the_control_socket(start_proxy: Callable[..., ProxyProcess]) -> None:
    custom = Profile(delay_ms=12.5, jitter_ms=3, stall_every_s=60, stall_s=1, reset_every_s=90, rate_kbit=512,
                     seed=42)
    for profile in [*PROFILES.values(), custom, dataclasses.replace(PROFILES["WAN100"], seed=9)]:
        assert Profile.from_json(json.loads(json.dumps(profile.to_json()))) == profile
    assert faultproxy.parse_profile("wan100") == PROFILES["WAN100"]
    assert faultproxy.parse_profile('{"delay_ms": 50}') == Profile(delay_ms=50)
    # the named profiles cover the ranges: RTT 20-300 ms with jitter, stalls, resets, a bandwidth each
    rtts = [2 * p.delay_ms for p in PROFILES.values() if p.delay_ms]
    assert min(rtts) >= 20 and max(rtts) == 300
    assert all(p.rate_kbit > 0 for name, p in PROFILES.items() if name != "LAN")
    assert any(p.stall_every_s for p in PROFILES.values()) and any(p.reset_every_s for p in PROFILES.values())

    proxy = start_proxy(json.dumps(custom.to_json()))  # the --profile JSON start option
    assert Profile.from_json(proxy.control.stats()["profile"]) == custom
    assert proxy.control.set_profile("satellite") == PROFILES["SATELLITE"]
    # a profile is replaced whole: omitted fields take their defaults, not their old values
    assert proxy.control.set_profile(delay_ms=7) == Profile(delay_ms=7)
    assert Profile.from_json(proxy.control.stats()["profile"]) == Profile(delay_ms=7)


@pytest.mark.parametrize(("fields", "named"), [
    ({"delay_ms": -1}, "delay_ms"),
    ({"jitter_ms": "5"}, "jitter_ms"),
    ({"stall_every_s": float("inf"), "stall_s": 1}, "stall_every_s"),
    ({"stall_every_s": 10}, "stall_s"),
    ({"down": 1}, "down"),
    ({"rate_kbit": 1.5}, "rate_kbit"),
    ({"seed": "abc"}, "seed"),
])
def test_a_bad_profile_is_refused_naming_the_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ProfileError, match=named):
        Profile(**fields)


def test_bad_control_input_gets_an_error_naming_the_problem_and_the_proxy_keeps_running(
        start_proxy: Callable[..., ProxyProcess]) -> None:
    proxy = start_proxy(Profile(delay_ms=10))
    requests = [
        (b"this is not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"op": "fly"}', "unknown op 'fly'"),
        (b'{"op": ["stats"]}', "unknown op"),
        (b'{"op": "stats", "verbose": true}', "'verbose'"),
        (b'{"op": "profile"}', '"profile"'),
        (b'{"op": "profile", "profile": {"delya_ms": 5}}', "'delya_ms'"),
        (b'{"op": "profile", "profile": {"delay_ms": -5}}', "delay_ms"),
        (b'{"op": "profile", "profile": "MARS"}', "'MARS'"),
        (b'{"op": "profile", "profile": 5}', "JSON object or a profile name"),
        (b'{"op": "stall", "s": "long"}', '"s"'),
        (b'{"op": "stall", "s": -1}', '"s"'),
        (b'{"op": "stall"}', '"s"'),
    ]
    with socket.socket(socket.AF_UNIX) as ctl:  # one connection, one reply line per request line
        ctl.settimeout(10)
        ctl.connect(proxy.control.path)
        ctl.sendall(b"".join(line + b"\n" for line, _ in requests))
        replies = _read_lines(ctl, len(requests))
    for (line, expected), reply in zip(requests, replies, strict=True):
        assert reply["ok"] is False and expected in reply["error"], (line, reply)

    with pytest.raises(ProxyControlError, match="delya_ms"):
        proxy.control.set_profile({"delya_ms": 5})
    stats = proxy.control.stats()
    assert Profile.from_json(stats["profile"]) == Profile(delay_ms=10) and stats["stalls"] == 0
    with connect(proxy.port) as sock:
        assert 0.02 <= round_trip(sock, b"still forwarding") < 1.0


def _read_lines(sock: socket.socket, n: int) -> list[dict[str, Any]]:
    buf = b""
    while buf.count(b"\n") < n:
        part = sock.recv(65536)
        if not part:
            break
        buf += part
    return [json.loads(line) for line in buf.splitlines()]


def test_bad_start_options_exit_with_a_message(sockdir: Path) -> None:
    cases = [(["--upstream", "127.0.0.1:1", "--profile", '{"delay": 1}'], "'delay'"),
             (["--upstream", "127.0.0.1:1", "--profile", "MARS"], "'MARS'"),
             (["--upstream", "localhost"], "HOST:PORT"),
             (["--upstream", "127.0.0.1:1", "--connect-timeout", "0"], "seconds > 0"),
             (["--upstream", "127.0.0.1:1", "--control", str(sockdir / ("x" * 120))], "too long")]
    for argv, expected in cases:
        out = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and expected in out.stderr, (argv, out.stderr)


# ------------------------------------------------------------------------------------------------ shutdown


def test_sigterm_closes_connections_and_removes_the_control_socket(
        start_proxy: Callable[..., ProxyProcess]) -> None:
    proxy = start_proxy()
    control = Path(proxy.control.path)
    assert control.is_socket()
    with connect(proxy.port) as sock:
        round_trip(sock, b"hello")
        assert proxy.proc is not None
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(10) == 0
        try:
            assert sock.recv(10) == b""
        except ConnectionResetError:
            pass
    assert not control.exists()
    with pytest.raises(ProxyControlError, match="cannot talk"):
        ProxyControl(control).stats()
