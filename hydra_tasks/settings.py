"""One frozen settings object, read from ``HYDRA_*`` environment variables once.

Nothing reads the environment at import time: :meth:`Settings.from_env` is called by
the app factory (or a test) and the resulting object is passed around explicitly.
Every bad value raises :class:`~hydra_tasks.errors.ConfigError` naming the variable,
the value that was seen and what would be accepted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar
from urllib.parse import urlsplit

from .errors import ConfigError

T = TypeVar("T")

MICRO_PER_TOKEN = 1_000_000
REGION_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use one of true/false, 1/0, yes/no, on/off.")


def _number(kind: Callable[[str], T], name: str, raw: str, lo: float, hi: float) -> T:
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}; set a number in [{lo}, {hi}].") from None
    if not (lo <= value <= hi):  # type: ignore[operator]
        raise ConfigError(f"{name}={raw!r} is out of range; set a value in [{lo}, {hi}].")
    return value


def micro_tokens(text: str) -> int:
    """A decimal token amount (``"1.5"``) as integer micro-tokens, exactly; ValueError saying why not."""
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError("is not a decimal token amount such as '1.5'") from None
    if not amount.is_finite():
        raise ValueError("is not a finite amount such as '1.5'")
    micro = amount * MICRO_PER_TOKEN
    if micro != micro.to_integral_value():
        raise ValueError("has more than 6 decimal places; tokens are counted in micro-tokens")
    return int(micro)


def parse_micro_tokens(name: str, raw: str, *, hi_tokens: int = 10**9) -> int:
    """Parse a setting's decimal token amount into integer micro-tokens, exactly."""
    try:
        micro = micro_tokens(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} {exc}.") from None
    if not (0 <= micro <= hi_tokens * MICRO_PER_TOKEN):
        raise ConfigError(f"{name}={raw!r} is out of range; set an amount in [0, {hi_tokens}] tokens.")
    return micro


JOB_DETAIL_S_DEFAULT = 3_600.0  # how long a finished job's chunk log outlives it (HYDRA_JOB_DETAIL_S)


@dataclass(frozen=True)
class Spec:
    """How one field is read from the environment."""

    env: str
    parse: Callable[[str, str], Any]


def _int(lo: int, hi: int) -> Callable[[str, str], int]:
    return lambda name, raw: _number(int, name, raw, lo, hi)


def _float(lo: float, hi: float) -> Callable[[str, str], float]:
    return lambda name, raw: _number(float, name, raw, lo, hi)


def _str(name: str, raw: str) -> str:
    return raw.strip()


def _region(name: str, raw: str) -> str:
    value = raw.strip()
    if not REGION_RE.match(value):
        raise ConfigError(f"{name}={raw!r} is not a region name; use lowercase letters, digits and '-' (max 40).")
    return value


def _redis_url(name: str, raw: str) -> str:
    value = raw.strip()
    if value.lower().startswith(("redis+sentinel://", "rediss+sentinel://")):
        from .redis_conn import SentinelUrl

        try:
            SentinelUrl.parse(value)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        return value
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{name} must start with redis://, rediss://, unix://, or redis+sentinel:// / "
                          f"rediss+sentinel:// for a Sentinel-managed deployment (got a value starting {value[:8]!r}).")
    return value


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _public_hosts(name: str, raw: str) -> str:
    """Comma-separated host names or IP addresses (the control host as volunteers reach it)."""
    import ipaddress

    hosts = [h.strip() for h in raw.split(",") if h.strip()]
    for host in hosts:
        try:
            ipaddress.ip_address(host)
            continue
        except ValueError:
            pass
        if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in host.rstrip(".").split(".")):
            raise ConfigError(f"{name}={raw!r}: {host!r} is neither a host name nor an IP address; give the "
                              "name or address volunteers use to reach this machine, e.g. hydra.example.org "
                              "or 203.0.113.7 (several: comma-separated).")
    return ",".join(hosts)


def _web_url(name: str, raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        shown = repr(raw) if "@" not in raw else "(a value with credentials, not shown)"
        raise ConfigError(f"{name}={shown} is not a web address; set the Hydra webapp's URL, "
                          "e.g. http://127.0.0.1:5000 or https://hydra.example.org.")
    return value


def _flower_url(name: str, raw: str) -> str:
    """Flower's address as the dashboard's visitors reach it ("" or "off": no link)."""
    value = raw.strip().rstrip("/")
    if value.lower() in ("", "off"):
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        shown = repr(raw) if "@" not in raw else "(a value with credentials, not shown)"
        raise ConfigError(f"{name}={shown} is not a web address; set Flower's URL as the dashboard's visitors reach "
                          "it, e.g. http://127.0.0.1:5555 (no user name or password in it), or off for no link.")
    return value


def _attestation(name: str, raw: str) -> str:
    """none (no attestation required), sev-snp, tdx, sgx (a worker must have that TEE, verified) or auto
    (whatever TEE a worker has, verified); see trust/attestation.py."""
    value = raw.strip().lower()
    if value not in {"none", "auto", "sev-snp", "tdx", "sgx"}:
        hint = " (AMD SEV without SNP has no attestation report; use sev-snp)" if value == "sev" else ""
        raise ConfigError(f"{name}={raw!r} is unknown{hint}; use one of none, sev-snp, tdx, sgx, auto "
                          "(auto: whatever TEE a worker has, verified).")
    return value


RATE_LIMIT_OFF = "off"
_RATE_LIMIT_RE = re.compile(r"^([0-9]{1,7})\s*(?:/|per)\s*(?:([0-9]{1,4})\s*)?(second|minute|hour|day)s?$")


KERNEL_VARIANTS = ("auto", "baseline", "avx2", "avx512")


def _kernel_variant(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in KERNEL_VARIANTS:
        raise ConfigError(f"{name}={raw!r} is not a kernel variant; use one of {', '.join(KERNEL_VARIANTS)} "
                          "(auto: the widest this CPU supports).")
    return value


def _rate_limit(name: str, raw: str) -> str:
    """A per-client-address rate limit for the webapp (webapp/ratelimit.py): ``30/minute``,
    ``30 per minute``, ``100 per 5 minutes``; ``off`` or ``0`` turns it off. Normalised to
    ``N/[M ]unit`` (Flask-Limiter's notation) or ``off``."""
    value = " ".join(raw.strip().lower().split())
    if value in ("off", "0", "false", "no", "none"):
        return RATE_LIMIT_OFF
    match = _RATE_LIMIT_RE.match(value)
    if not match or int(match[1]) < 1 or (match[2] is not None and int(match[2]) < 1):
        raise ConfigError(f"{name}={raw!r} is not a rate limit; write requests per window from one client "
                          "address, e.g. 30/minute, 10 per hour or 100 per 5 minutes (units: second, minute, "
                          "hour, day), or off to turn the limit off.")
    count, multiples, unit = match[1], match[2], match[3]
    return f"{int(count)}/{int(multiples)} {unit}" if multiples else f"{int(count)}/{unit}"


def _meta(env: str, parse: Callable[[str, str], Any]) -> dict[str, Spec]:
    return {"spec": Spec(env, parse)}


@dataclass(frozen=True)
class Settings:
    """Every knob Hydra has. Build with :meth:`from_env`; change in tests with :meth:`with_`."""

    # --- infrastructure
    redis_url: str | None = field(default=None, metadata=_meta("HYDRA_REDIS_URL", _redis_url))
    # the CA certificate (PEM file) a rediss:// server must be signed by; empty: the system's CAs
    redis_ca: str = field(default="", metadata=_meta("HYDRA_REDIS_CA", _str))
    # names/addresses of this control host as volunteers reach it (comma-separated): extra SANs of its TLS
    # certificate; the first is the host in volunteers' credentials (default: the host of HYDRA_REDIS_URL)
    public_host: str = field(default="", metadata=_meta("HYDRA_PUBLIC_HOST", _public_hosts))
    # high availability (redis_conn.confirm_replicated): after every ledger write (mint, transfer, reversal) the
    # control plane waits until this many replicas have it (0: no WAIT), at most this long
    redis_wait_replicas: int = field(default=0, metadata=_meta("HYDRA_REDIS_WAIT_REPLICAS", _int(0, 16)))
    redis_wait_timeout_ms: int = field(default=1000, metadata=_meta("HYDRA_REDIS_WAIT_TIMEOUT_MS", _int(1, 600_000)))
    data_dir: Path = field(
        default_factory=lambda: Path.home() / ".local" / "share" / "hydra",
        metadata=_meta("HYDRA_DATA_DIR", lambda n, r: Path(r).expanduser()),
    )
    api_token: str | None = field(default=None, repr=False, metadata=_meta("HYDRA_API_TOKEN", _str))
    region: str = field(default="local", metadata=_meta("HYDRA_REGION", _region))
    key_file: str = field(default="", metadata=_meta("HYDRA_KEY_FILE", _str))  # worker key; default data_dir/worker.key
    # a volunteer's credentials from `hydra volunteer add` (set by `hydra worker --join`)
    join_file: str = field(default="", metadata=_meta("HYDRA_JOIN_FILE", _str))
    # the webapp the CLI talks to (tokens, grid-info); default: the one `hydra up` runs for data_dir
    web_url: str = field(default="", metadata=_meta("HYDRA_URL", _web_url))
    # Flower's URL, linked from the dashboard's header ("": no link; `hydra up` sets it for the Flower it runs)
    flower_url: str = field(default="", metadata=_meta("HYDRA_FLOWER_URL", _flower_url))
    # --- multi-machine mode (trust/volunteers.py): one Redis ACL user per volunteer
    # `hydra up` starts the embedded Redis with ACLs (needs redis-server >= 7): `default` off, operator user `hydra`;
    # only enrolled volunteers are heard (off: a single machine trusts its own local workers)
    isolate: bool = field(default=False, metadata=_meta("HYDRA_ISOLATE", _parse_bool))
    # whether anyone may enrol through POST /api/volunteers with a signed request, and how many per hour
    self_enrolment: bool = field(default=False, metadata=_meta("HYDRA_SELF_ENROLMENT", _parse_bool))
    self_enrolment_per_hour: int = field(default=20, metadata=_meta("HYDRA_SELF_ENROLMENT_PER_HOUR",
                                                                    _int(1, 100_000)))
    # --- webapp rate limits per client address (webapp/ratelimit.py), counted in Redis; "off" turns one off
    rate_limit_transfers: str = field(default="30/minute",
                                      metadata=_meta("HYDRA_RATE_LIMIT_TRANSFERS", _rate_limit))
    rate_limit_grid_reports: str = field(default="60/minute",
                                         metadata=_meta("HYDRA_RATE_LIMIT_GRID_REPORTS", _rate_limit))
    rate_limit_enrolment: str = field(default="10/hour", metadata=_meta("HYDRA_RATE_LIMIT_ENROLMENT", _rate_limit))
    rate_limit_profiles: str = field(default="10/minute", metadata=_meta("HYDRA_RATE_LIMIT_PROFILES", _rate_limit))
    rate_limit_reads: str = field(default=RATE_LIMIT_OFF, metadata=_meta("HYDRA_RATE_LIMIT_READS", _rate_limit))
    # reverse proxies in front of the webapp whose X-Forwarded-For is believed (0: the TCP peer is the client)
    trusted_proxies: int = field(default=0, metadata=_meta("HYDRA_TRUSTED_PROXIES", _int(0, 10)))
    # --- chunk lifecycle
    lease_s: float = field(default=60.0, metadata=_meta("HYDRA_LEASE_S", _float(0.5, 86_400)))
    sweep_interval_s: float = field(default=5.0, metadata=_meta("HYDRA_SWEEP_INTERVAL_S", _float(0.2, 3_600)))
    # how often the control plane signs a checkpoint of the ledger's journal (ledger/chain.py)
    checkpoint_interval_s: float = field(default=60.0,
                                         metadata=_meta("HYDRA_CHECKPOINT_INTERVAL_S", _float(1, 86_400)))
    heartbeat_s: float = field(default=5.0, metadata=_meta("HYDRA_HEARTBEAT_S", _float(0.2, 600)))
    worker_timeout_s: float = field(default=30.0, metadata=_meta("HYDRA_WORKER_TIMEOUT_S", _float(1, 86_400)))
    # how long a client waits on a Redis that has gone silent (a partition, a frozen server) before it drops the
    # connection and reconnects; every broker timeout derives from it (celery_app.broker_timeouts)
    broker_timeout_s: float = field(default=15.0, metadata=_meta("HYDRA_BROKER_TIMEOUT_S", _float(1, 600)))
    # an offline worker's registry entry and queue are removed this long after its last heartbeat (0: never);
    # worker/registry.prune_offline, run by the sweep and `hydra workers prune`
    worker_retention_s: float = field(default=7 * 86_400.0,
                                      metadata=_meta("HYDRA_WORKER_RETENTION_S", _float(0, 10 * 366 * 86_400)))
    # a finished job's result and summary are removed this long after it finished (0: never); jobs/retention.py,
    # run by the sweep and `hydra jobs prune`
    job_retention_s: float = field(default=30 * 86_400.0,
                                   metadata=_meta("HYDRA_JOB_RETENTION_S", _float(0, 10 * 366 * 86_400)))
    # how long a finished job's chunk log (the per-chunk charts) outlives it; its other working state goes at once
    job_detail_s: float = field(default=JOB_DETAIL_S_DEFAULT, metadata=_meta("HYDRA_JOB_DETAIL_S", _float(0, 366 * 86_400)))
    # processes of the intake worker (prefork): each takes results and merges them on its own; they work side by
    # side safely (every step is an atomic script), so the control plane scales by adding them (issue 15)
    intake_processes: int = field(default=2, metadata=_meta("HYDRA_INTAKE_PROCESSES", _int(1, 64)))
    # how long a control process reuses its view of the fleet (every worker's record) before reading it again;
    # registrations, state changes, quarantines and prunes invalidate it at once (scheduling/cluster.snapshot)
    fleet_view_s: float = field(default=1.0, metadata=_meta("HYDRA_FLEET_VIEW_S", _float(0, 60)))
    inflight_per_slot: int = field(default=2, metadata=_meta("HYDRA_INFLIGHT_PER_SLOT", _int(1, 64)))
    # bundles (issue 15): chunks expected to take less than bundle_s on their worker travel several to a message
    # (one compute task, one signed result envelope, one intake task), adding up to about bundle_s of work, at
    # most bundle_max (and at most what the worker said it takes: a volunteer's own HYDRA_BUNDLE_MAX, 1 = never);
    # the worker's window grows by the same factor for them. 0 turns bundling off.
    bundle_s: float = field(default=0.05, metadata=_meta("HYDRA_BUNDLE_S", _float(0, 60)))
    bundle_max: int = field(default=16, metadata=_meta("HYDRA_BUNDLE_MAX", _int(1, 256)))
    max_chunk_failures: int = field(default=3, metadata=_meta("HYDRA_MAX_CHUNK_FAILURES", _int(1, 100)))
    max_chunk_expiries: int = field(default=10, metadata=_meta("HYDRA_MAX_CHUNK_EXPIRIES", _int(1, 1_000)))
    # --- static chunk sizes (adaptive sizing replaces these per worker)
    pi_chunk_samples: int = field(default=200_000_000, metadata=_meta("HYDRA_PI_CHUNK_SAMPLES", _int(1_000, 10**12)))
    tile_px: int = field(default=128, metadata=_meta("HYDRA_TILE_PX", _int(8, 4_096)))
    # --- adaptive sizing: chunks take about target_chunk_s on the worker they are cut for
    adaptive: bool = field(default=True, metadata=_meta("HYDRA_ADAPTIVE", _parse_bool))
    target_chunk_s: float = field(default=3.0, metadata=_meta("HYDRA_TARGET_CHUNK_S", _float(0.05, 3_600)))
    min_chunk_s: float = field(default=0.5, metadata=_meta("HYDRA_MIN_CHUNK_S", _float(0.01, 3_600)))
    # --- volunteer side: threads one chunk's kernel may use (kernels release the GIL)
    kernel_threads: int = field(default=1, metadata=_meta("HYDRA_KERNEL_THREADS", _int(1, 256)))
    # the kernels' instruction-set variant (all give the same bits); auto: the widest the CPU supports
    kernel_variant: str = field(default="auto", metadata=_meta("HYDRA_KERNEL_VARIANT", _kernel_variant))
    cpu_limit: float = field(default=100.0, metadata=_meta("HYDRA_CPU_LIMIT", _float(1, 100)))
    pause_on_battery: bool = field(default=True, metadata=_meta("HYDRA_PAUSE_ON_BATTERY", _parse_bool))
    # --- grid-aware scheduling (seed names)
    grid_aware: bool = field(default=True, metadata=_meta("HYDRA_GRID_AWARE", _parse_bool))
    carbon_weight: float = field(default=0.5, metadata=_meta("HYDRA_CARBON_WEIGHT", _float(0, 1)))
    cost_weight: float = field(default=0.2, metadata=_meta("HYDRA_COST_WEIGHT", _float(0, 1)))
    renewable_weight: float = field(default=0.3, metadata=_meta("HYDRA_RENEWABLE_WEIGHT", _float(0, 1)))
    regions: str = field(default="", metadata=_meta("HYDRA_REGIONS", _str))            # see grid/regions.py
    carbon_trace: str = field(default="", metadata=_meta("HYDRA_CARBON_TRACE", _str))  # hourly CSV to replay
    carbon_providers: str = field(default="", metadata=_meta("HYDRA_CARBON_PROVIDERS", _str))  # grid/configure.py
    electricitymaps_token: str | None = field(default=None, repr=False,
                                              metadata=_meta("HYDRA_ELECTRICITYMAPS_TOKEN", _str))
    watttime_username: str | None = field(default=None, metadata=_meta("HYDRA_WATTTIME_USERNAME", _str))
    watttime_password: str | None = field(default=None, repr=False, metadata=_meta("HYDRA_WATTTIME_PASSWORD", _str))
    watttime_regions: str = field(default="", metadata=_meta("HYDRA_WATTTIME_REGIONS", _str))
    shift_safety: float = field(default=0.7, metadata=_meta("HYDRA_SHIFT_SAFETY", _float(0.05, 1)))
    # share of every later hour time shifting leaves for work not submitted yet (scheduling/shifting.py)
    shift_headroom: float = field(default=0.1, metadata=_meta("HYDRA_SHIFT_HEADROOM", _float(0, 0.9)))
    # and books each job as if it had this share more work left than estimated
    shift_margin: float = field(default=0.2, metadata=_meta("HYDRA_SHIFT_MARGIN", _float(0, 5)))
    watts_per_core: float = field(default=15.0, metadata=_meta("HYDRA_WATTS_PER_CORE", _float(0.1, 500)))
    # --- token incentives (seed names); amounts are integer micro-tokens
    token_incentives: bool = field(default=True, metadata=_meta("HYDRA_TOKEN_INCENTIVES", _parse_bool))
    base_token_rate_micro: int = field(default=1_000_000, metadata=_meta("HYDRA_BASE_TOKEN_RATE", parse_micro_tokens))
    carbon_bonus_rate_micro: int = field(default=500_000, metadata=_meta("HYDRA_CARBON_BONUS_RATE", parse_micro_tokens))
    renewable_bonus_rate_micro: int = field(
        default=200_000, metadata=_meta("HYDRA_RENEWABLE_BONUS_RATE", parse_micro_tokens)
    )
    performance_multiplier: float = field(default=1.0, metadata=_meta("HYDRA_PERFORMANCE_MULTIPLIER", _float(0, 10)))
    reliability_bonus: float = field(default=0.1, metadata=_meta("HYDRA_RELIABILITY_BONUS", _float(0, 10)))
    max_tokens_per_chunk_micro: int = field(
        default=100_000_000, metadata=_meta("HYDRA_MAX_TOKENS_PER_CHUNK", parse_micro_tokens)
    )
    # --- confidential compute (seed names; trust/attestation.py). Submitted jobs are confidential by default
    # (they run only on workers whose attestation was verified under `attestation`)
    confidential: bool = field(default=False, metadata=_meta("HYDRA_CONFIDENTIAL", _parse_bool))
    attestation: str = field(default="none", metadata=_meta("HYDRA_ATTESTATION", _attestation))
    # sealed payloads (trust/sealing.py): chunk parameters and results travel as PyNaCl boxes between the
    # control plane and the worker holding the lease. On a volunteer: refuse chunks that arrive unsealed
    encryption: bool = field(default=False, metadata=_meta("HYDRA_ENCRYPTION", _parse_bool))

    def __post_init__(self) -> None:
        if self.worker_timeout_s <= self.heartbeat_s:
            raise ConfigError(
                f"HYDRA_WORKER_TIMEOUT_S ({self.worker_timeout_s}) must exceed HYDRA_HEARTBEAT_S "
                f"({self.heartbeat_s}); otherwise live workers would be marked offline."
            )
        if 0 < self.worker_retention_s <= self.worker_timeout_s:
            raise ConfigError(f"HYDRA_WORKER_RETENTION_S ({self.worker_retention_s}) must exceed HYDRA_WORKER_TIMEOUT_S "
                              f"({self.worker_timeout_s}), or be 0 to keep offline workers listed for ever.")
        if self.min_chunk_s > self.target_chunk_s:
            raise ConfigError(f"HYDRA_MIN_CHUNK_S ({self.min_chunk_s}) must not exceed HYDRA_TARGET_CHUNK_S "
                              f"({self.target_chunk_s}).")
        for f in fields(self):  # also when set in code (with_), not only from the environment
            if f.metadata["spec"].parse is _rate_limit:
                _rate_limit(f.metadata["spec"].env, getattr(self, f.name))
        from .grid.regions import parse_regions

        parse_regions(self.regions)  # validated once, here; ConfigError says what to fix
        from .grid import configure

        configure.check(self)
        if self.carbon_trace and not Path(self.carbon_trace).is_file():
            raise ConfigError(f"HYDRA_CARBON_TRACE={self.carbon_trace!r} is not a file; give the path of an hourly "
                              "CSV (datetime_utc,ZONE,...) or leave it unset to use the embedded annual table.")
        if self.redis_ca and not Path(self.redis_ca).expanduser().is_file():
            raise ConfigError(f"HYDRA_REDIS_CA={self.redis_ca!r} is not a file; give the path of the CA certificate "
                              "(PEM) the operator gave you with your credentials, or leave it unset to use the "
                              "system's certificate authorities.")
        if self.confidential and self.attestation == "none":
            raise ConfigError("HYDRA_CONFIDENTIAL=true needs an attestation policy, but HYDRA_ATTESTATION=none "
                              "(no attestation required) would let confidential jobs run on any worker; set "
                              "HYDRA_ATTESTATION to sev-snp, tdx, sgx or auto, or HYDRA_CONFIDENTIAL=false.")
        weights = self.carbon_weight + self.cost_weight + self.renewable_weight
        if self.grid_aware and weights <= 0:
            raise ConfigError(
                "HYDRA_CARBON_WEIGHT, HYDRA_COST_WEIGHT and HYDRA_RENEWABLE_WEIGHT are all 0 while "
                "HYDRA_GRID_AWARE is on; give at least one a positive weight or set HYDRA_GRID_AWARE=false."
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read every ``HYDRA_*`` variable once. Unknown ``HYDRA_*`` names are an error (typos)."""
        env = os.environ if env is None else env
        known = {f.metadata["spec"].env for f in fields(cls)}
        unknown = sorted(k for k in env if k.startswith("HYDRA_") and k not in known and k not in _IGNORED)
        removed = [f"{k} ({_REMOVED[k]})" for k in unknown if k in _REMOVED]
        if removed:
            raise ConfigError(f"Removed setting(s): {'; '.join(removed)}; unset them.")
        if unknown:
            raise ConfigError(f"Unknown setting(s) {', '.join(unknown)}; known ones are: {', '.join(sorted(known))}.")
        values: dict[str, Any] = {}
        for f in fields(cls):
            spec: Spec = f.metadata["spec"]
            raw = env.get(spec.env)
            if raw is not None and raw.strip() != "":
                values[f.name] = spec.parse(spec.env, raw)
        return cls(**values)

    def with_(self, **changes: Any) -> "Settings":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The ``HYDRA_*`` variables that reproduce these settings in a child process."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            env = f.metadata["spec"].env
            if f.name.endswith("_micro"):
                out[env] = str(Decimal(value) / MICRO_PER_TOKEN)
            elif isinstance(value, bool):
                out[env] = "true" if value else "false"
            else:
                out[env] = str(value)
        return out

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"


# HYDRA_* variables that are read elsewhere and are not settings fields.
# HYDRA_TEST_ARTIFACTS: where the test suite keeps its screenshots (tests/support.artifacts_dir);
# HYDRA_REQUIRE_CLUSTER=1: the netns cluster tests fail instead of skipping where they cannot run (.ci/run);
# HYDRA_REQUIRE_CROSS=1: so do the arm64 (qemu-aarch64) and emulated-CPU (qemu-x86_64) kernel tests.
_IGNORED: frozenset[str] = frozenset({"HYDRA_TEST_ARTIFACTS", "HYDRA_REQUIRE_CLUSTER", "HYDRA_REQUIRE_CROSS"})
#: Settings that existed once, and why they are gone (README's settings table says the same).
_REMOVED: dict[str, str] = {
    "HYDRA_ENCLAVE_PATH": "Hydra has no enclave runner: a worker is protected by running inside a confidential "
                          "VM (SEV-SNP, TDX), which needs no enclave path, and an SGX enclave would need a runner "
                          "and manifest Hydra does not build",
}
