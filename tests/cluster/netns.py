"""Hosts on a private network, built from Linux network namespaces (``ip netns``, veth, a bridge).

The test cluster of issue 14: a *switch* namespace holds a bridge; the control host is this machine
(the root namespace, where the test and the control plane run) joined to the bridge by one veth; each
volunteer host is a namespace of its own, joined by another. Every host has its own address in a
private /24. A volunteer's link can be shaped (bandwidth with ``tc tbf``; delay with ``netem`` where
the kernel has it, else the fault proxy adds it), taken down (a partition: packets vanish, nothing is
closed) and brought up again.

Nothing is left behind: every interface lives in a namespace this module made (the control host's
veth dies with its peer in the switch namespace), so deleting the namespaces removes the whole
network, and the only files, ``/etc/netns/<ns>/hosts`` (which ``ip netns exec`` bind-mounts over
``/etc/hosts`` so a volunteer resolves the control host's name), are removed with them.
:meth:`Network.destroy` runs on exit, and a new :class:`Network` first removes what a crashed run
left (namespaces named ``hyd<pid>...`` whose process is gone).

Needs root and iproute2 (Debian ``iproute2``); :func:`unavailable` says why it cannot run.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

PREFIX = "hyd"  # every namespace and root-side interface this module makes starts with it
NETNS_ETC = Path("/etc/netns")


def unavailable() -> str | None:
    """Why network namespaces cannot be built here (None: they can)."""
    if os.geteuid() != 0:
        return "the netns cluster needs root (ip netns, veth, tc)"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "the netns cluster needs iproute2 (apt-get install iproute2)"
    probe = f"{PREFIX}probe{os.getpid()}"
    try:
        _run(["ip", "netns", "add", probe])
    except RuntimeError as exc:
        return f"cannot create a network namespace here: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def has_netem() -> bool:
    """True if this kernel has the ``netem`` qdisc (it adds delay and jitter below TCP); tried on a
    throwaway namespace's loopback."""
    probe = f"{PREFIX}netem{os.getpid()}"
    try:
        _run(["ip", "netns", "add", probe])
        ok = subprocess.run(["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                             "delay", "1ms"], capture_output=True).returncode == 0
    except RuntimeError:
        return False
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ok


def _run(argv: Sequence[str]) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Delete the namespaces (and their /etc/netns files) of earlier runs whose process is gone."""
    removed = []
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        found = re.fullmatch(rf"{PREFIX}(\d+)x\w*", name)
        if found and not _pid_alive(int(found.group(1))):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
            removed.append(name)
    return removed


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.213.0.0/16 that no route of this machine covers (the pid picks where to start)."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    used = []
    for token in routes.split():
        with contextlib.suppress(ValueError):
            if "/" in token:
                used.append(ipaddress.ip_network(token, strict=False))
    for offset in range(256):
        net = ipaddress.ip_network(f"10.213.{(os.getpid() + offset) % 250 + 1}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no free /24 in 10.213.0.0/16 for the test network")


@dataclass
class Host:
    """One volunteer host: its namespace, address and the switch port of its link."""

    name: str
    ns: str
    address: str
    port: str  # its link's interface in the switch namespace (taken down for a partition)
    down: bool = False

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run on this host (in its namespace, with its /etc/hosts)."""
        return ["ip", "netns", "exec", self.ns, *argv]


@dataclass
class Network:
    """A bridge with the control host (this machine) and ``volunteers`` hosts on it."""

    volunteers: Sequence[str]
    control_names: Sequence[str] = ("hydra-control",)  # what volunteers call the control host
    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}x{os.urandom(2).hex()}")
    control_link: str = field(default_factory=lambda: f"hy{os.urandom(3).hex()}c")  # in the root namespace
    hosts: dict[str, Host] = field(default_factory=dict)
    control_address: str = ""
    subnet: ipaddress.IPv4Network | None = None
    _built: bool = False

    @property
    def switch(self) -> str:
        return f"{self.tag}sw"

    def build(self, *, control_names_resolve_to: dict[str, str] | None = None) -> "Network":
        """Create the switch, the control host's link and every volunteer host. On any failure,
        whatever was made is removed before the error is raised. ``control_names_resolve_to``: per
        volunteer, the address its /etc/hosts gives the control host's names (its fault proxy on
        127.0.0.1, say); default the control host's address."""
        remove_stale()
        self.subnet = _free_subnet()
        addresses = list(self.subnet.hosts())
        self.control_address = str(addresses[0])
        self._built = True
        try:
            _run(["ip", "netns", "add", self.switch])
            sw = ["ip", "-n", self.switch]
            _run([*sw, "link", "add", "br0", "type", "bridge"])
            _run([*sw, "link", "set", "br0", "up"])
            _run([*sw, "link", "set", "lo", "up"])
            # The control host: a veth from the root namespace to the bridge.
            _run(["ip", "link", "add", self.control_link, "type", "veth", "peer", "name", "c0", "netns", self.switch])
            _run([*sw, "link", "set", "c0", "master", "br0", "up"])
            _run(["ip", "addr", "add", f"{self.control_address}/{self.subnet.prefixlen}", "dev", self.control_link])
            _run(["ip", "link", "set", self.control_link, "up"])
            for i, name in enumerate(self.volunteers, start=1):
                host = Host(name, f"{self.tag}v{i}", str(addresses[i]), f"v{i}")
                _run(["ip", "netns", "add", host.ns])
                _run([*sw, "link", "add", host.port, "type", "veth", "peer", "name", "eth0", "netns", host.ns])
                _run([*sw, "link", "set", host.port, "master", "br0", "up"])
                hn = ["ip", "-n", host.ns]
                _run([*hn, "link", "set", "lo", "up"])
                _run([*hn, "addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", "eth0"])
                _run([*hn, "link", "set", "eth0", "up"])
                target = (control_names_resolve_to or {}).get(name, self.control_address)
                etc = NETNS_ETC / host.ns
                etc.mkdir(parents=True, exist_ok=True)
                (etc / "hosts").write_text(f"127.0.0.1 localhost\n{host.address} {name}\n"
                                           f"{target} {' '.join(self.control_names)}\n")
                self.hosts[name] = host
        except BaseException:
            self.destroy()
            raise
        return self

    # --- faults ------------------------------------------------------------------------------
    def partition(self, name: str) -> None:
        """Cut the volunteer's link at the switch: its packets vanish; no connection is closed."""
        _run(["ip", "-n", self.switch, "link", "set", self.hosts[name].port, "down"])
        self.hosts[name].down = True

    def heal(self, name: str) -> None:
        _run(["ip", "-n", self.switch, "link", "set", self.hosts[name].port, "up"])
        self.hosts[name].down = False

    def shape(self, name: str, *, rate_kbit: int, delay_ms: float = 0.0, jitter_ms: float = 0.0,
              netem: bool = False) -> None:
        """Cap the link's bandwidth at ``rate_kbit`` each way (``tc tbf``); with ``netem`` (where the
        kernel has it) also add ``delay_ms`` ± ``jitter_ms`` each way. Replaces any earlier shaping."""
        host = self.hosts[name]
        for ns, dev in ((self.switch, host.port), (host.ns, "eth0")):
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"], capture_output=True)
            if netem and delay_ms > 0:
                _run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem",
                      "delay", f"{delay_ms}ms", f"{jitter_ms}ms", "distribution", "normal"])
                parent = ["parent", "1:1", "handle", "10:"]
            else:
                parent = ["root"]
            burst = max(rate_kbit * 1000 // 8 // 50, 16_000)  # 20 ms worth of bytes, at least 16 kB
            _run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, *parent, "tbf", "rate",
                  f"{rate_kbit}kbit", "burst", str(burst), "latency", "200ms"])

    def unshape(self, name: str) -> None:
        host = self.hosts[name]
        for ns, dev in ((self.switch, host.port), (host.ns, "eth0")):
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"], capture_output=True)

    # --- teardown ------------------------------------------------------------------------------
    def destroy(self) -> None:
        """Remove every namespace (and so every interface) and /etc/netns file this network made.
        Idempotent; never raises."""
        if not self._built:
            return
        for host in self.hosts.values():
            subprocess.run(["ip", "netns", "del", host.ns], capture_output=True)
            shutil.rmtree(NETNS_ETC / host.ns, ignore_errors=True)
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for line in listing.splitlines():  # hosts whose creation failed half-way
            name = line.split()[0] if line.split() else ""
            if name.startswith(self.tag):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
                shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
        subprocess.run(["ip", "link", "del", self.control_link], capture_output=True)  # gone with its peer, normally
        self.hosts.clear()
        self._built = False

    def leftovers(self) -> list[str]:
        """Anything of this network still present (for the tests that check teardown)."""
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        found = [line.split()[0] for line in listing.splitlines() if line.startswith(self.tag)]
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        found += [self.control_link for line in links.splitlines() if f" {self.control_link}@" in line
                  or f" {self.control_link}:" in line]
        found += [str(p) for p in NETNS_ETC.glob(f"{self.tag}*")] if NETNS_ETC.is_dir() else []
        return found


@contextlib.contextmanager
def network(volunteers: Sequence[str], **kwargs: object) -> Iterator[Network]:
    """A built :class:`Network`, destroyed when the block ends (also on errors and Ctrl-C)."""
    net = Network(volunteers)
    try:
        net.build(**kwargs)  # type: ignore[arg-type]
        yield net
    finally:
        net.destroy()
