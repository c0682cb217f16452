"""Simulated volunteer hosts: speed, cores, CPU cap, region, availability and churn, cheaters.

Everything is drawn with numpy from one seed, so a scenario is reproducible.

Where the model comes from (and what is our own choice):

* **Diversity of hosts.** D. P. Anderson and K. Reed, "Celebrating Diversity in Volunteer
  Computing", Proc. HICSS-42, 2009, describe World Community Grid's hosts as highly diverse in
  speed, number of cores, memory and availability, and BOINC's scheduler as built for that. The
  *shape* here follows that (discrete core counts, a heavy-tailed per-core speed, a share of hosts
  that cap their CPU). The *numbers* (:data:`CORES`, :data:`SPEED_MEDIAN`, :data:`SPEED_SIGMA`,
  :data:`CPU_LIMITS`) are OUR CHOICE for a present-day fleet, not figures from that paper.
* **Availability and churn.** B. Javadi, D. Kondo, J.-M. Vincent and D. P. Anderson, "Discovering
  Statistical Models of Availability in Large Distributed Systems: An Empirical Study of
  SETI@home", IEEE TPDS 22(11):1896-1903, 2011, fit the availability traces of about 230,000
  SETI@home hosts (published in the Failure Trace Archive: D. Kondo, B. Javadi, A. Iosup and
  D. Epema, "The Failure Trace Archive", CCGrid 2010). They find that about 21% of hosts have
  availability that is a truly random (iid) process, modelled by a few distributions from different
  families (among them Weibull, log-normal and gamma, with heavy tails), and that most hosts are
  not iid. We model each host as an alternating renewal process: available intervals Weibull with
  shape < 1 (many short, some very long), unavailable intervals log-normal, with per-host means
  drawn log-normally (so hosts differ), plus a share of always-on hosts. The shape, the means and
  the always-on share (:data:`AVAILABILITY`) are OUR CHOICE, not the paper's fitted values (we had
  no access to its tables here); diurnal patterns and correlated failures are not modelled.
* **Regions** (:data:`REGION_SHARES`): the share of hosts per region is OUR CHOICE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: cores per host -> share of hosts (our choice; see the module docstring)
CORES: dict[int, float] = {1: 0.08, 2: 0.27, 4: 0.38, 8: 0.20, 16: 0.07}
#: per-core π samples/s: log-normal around this median (our choice: the development machine's AVX-512
#: kernel does about 1.5e9 on one core; benchmarks/kernels.py), with this sigma
SPEED_MEDIAN = 0.5e9
SPEED_SIGMA = 0.5
#: Mandelbrot work iterations/s per π sample/s on the same core (kernels benchmark: ~2x; our choice)
MANDEL_PER_PI = 2.0
#: CPU cap (HYDRA_CPU_LIMIT, %) -> share of hosts (our choice)
CPU_LIMITS: dict[float, float] = {100.0: 0.6, 75.0: 0.15, 50.0: 0.2, 25.0: 0.05}
#: region -> share of hosts (our choice); the zones are in :mod:`.grid`
REGION_SHARES: dict[str, float] = {
    "us-east": 0.12, "us-west": 0.10, "us-south": 0.08, "ca-east": 0.04, "eu-central": 0.12, "eu-west": 0.04,
    "eu-north": 0.04, "eu-south": 0.06, "eu-france": 0.07, "uk-south": 0.07, "ap-south": 0.06,
    "ap-southeast": 0.03, "ap-northeast": 0.08, "au-east": 0.04, "sa-east": 0.05,
}


@dataclass(frozen=True)
class Availability:
    """The alternating renewal model of one host's availability (all our choice, see above)."""

    always_on_share: float = 0.15     # dedicated machines, never away during the run
    on_shape: float = 0.6             # Weibull shape of available intervals (< 1: heavy tail)
    on_mean_median_h: float = 8.0     # per-host mean available interval: log-normal with this median
    off_mean_median_h: float = 3.0    # per-host mean unavailable interval: log-normal with this median
    host_sigma: float = 0.8           # spread of the per-host means
    off_sigma: float = 1.0            # sigma of each host's log-normal unavailable intervals


AVAILABILITY = Availability()


@dataclass
class Population:
    """The hosts, as parallel arrays, and each host's available intervals within the horizon."""

    cores: np.ndarray          # int
    core_speed: np.ndarray     # π samples/s of one core at 100% CPU
    cpu_limit: np.ndarray      # percent
    region: np.ndarray         # index into ``regions``
    cheater: np.ndarray        # bool
    regions: list[str]
    on_host: np.ndarray        # host of each available interval
    on_start: np.ndarray       # seconds from the start of the run
    on_end: np.ndarray
    horizon_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def hosts(self) -> int:
        return int(self.cores.size)

    def proc_speed(self) -> np.ndarray:
        """π samples/s one process of each host really computes (its core under its CPU cap)."""
        return self.core_speed * self.cpu_limit / 100.0


def _choice(rng: np.random.Generator, table: dict, n: int) -> np.ndarray:
    values = np.array(list(table))
    p = np.array(list(table.values()), dtype=float)
    return values[rng.choice(len(values), size=n, p=p / p.sum())]


def draw(n: int, *, horizon_s: float, seed: int, cheater_share: float = 0.0, churn: bool = True,
         availability: Availability = AVAILABILITY, regions: dict[str, float] | None = None) -> Population:
    """``n`` hosts and their available intervals over ``[0, horizon_s)``."""
    rng = np.random.default_rng(seed)
    shares = regions or REGION_SHARES
    names = list(shares)
    cores = _choice(rng, CORES, n).astype(np.int64)
    speed = SPEED_MEDIAN * np.exp(SPEED_SIGMA * rng.standard_normal(n))
    limit = _choice(rng, CPU_LIMITS, n).astype(float)
    region = rng.choice(len(names), size=n, p=np.array(list(shares.values())) / sum(shares.values()))
    cheater = np.zeros(n, dtype=bool)
    k = int(round(cheater_share * n))
    if k:
        cheater[rng.choice(n, size=k, replace=False)] = True
    hosts, starts, ends = _intervals(rng, n, horizon_s, availability if churn else None)
    return Population(cores, speed, limit, region, cheater, names, hosts, starts, ends, horizon_s)


def _intervals(rng: np.random.Generator, n: int, horizon_s: float,
               a: Availability | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Available intervals of every host, vectorised round by round (one interval per host per round)."""
    if a is None:
        return np.arange(n), np.zeros(n), np.full(n, horizon_s)
    h = 3600.0
    mean_on = a.on_mean_median_h * h * np.exp(a.host_sigma * rng.standard_normal(n))
    mean_off = a.off_mean_median_h * h * np.exp(a.host_sigma * rng.standard_normal(n))
    on_scale = mean_on / math.gamma(1.0 + 1.0 / a.on_shape)
    off_mu = np.log(mean_off) - a.off_sigma ** 2 / 2  # log-normal with that mean
    always = rng.random(n) < a.always_on_share
    # Start in a random phase: on with the long-run share of time on, part-way through an interval.
    on_now = always | (rng.random(n) < mean_on / (mean_on + mean_off))
    t = np.zeros(n)
    first_off = ~on_now
    t[first_off] = rng.random(first_off.sum()) * np.exp(off_mu[first_off] + a.off_sigma * rng.standard_normal(first_off.sum()))
    out_h, out_s, out_e = [np.flatnonzero(always)], [np.zeros(always.sum())], [np.full(always.sum(), horizon_s)]
    live = np.flatnonzero(~always)
    first = True
    while live.size:
        t_live = t[live]
        on_len = on_scale[live] * rng.weibull(a.on_shape, live.size)
        if first:
            on_len *= rng.random(live.size)  # the rest of the interval it is in at the start
            first = False
        end = np.minimum(t_live + on_len, horizon_s)
        keep = end > t_live
        out_h.append(live[keep])
        out_s.append(t_live[keep])
        out_e.append(end[keep])
        off_len = np.exp(off_mu[live] + a.off_sigma * rng.standard_normal(live.size))
        t[live] = t_live + on_len + off_len
        live = live[t[live] < horizon_s]
    return np.concatenate(out_h), np.concatenate(out_s), np.concatenate(out_e)


def capacity_curve(pop: Population, *, bin_s: float = 60.0) -> np.ndarray:
    """π samples/s the whole fleet could compute in each ``bin_s`` bin (every available process busy);
    ends of intervals are rounded to bins."""
    bins = int(math.ceil(pop.horizon_s / bin_s))
    rate = (pop.proc_speed() * pop.cores)[pop.on_host]
    diff = np.zeros(bins + 1)
    np.add.at(diff, np.minimum((pop.on_start // bin_s).astype(np.int64), bins), rate)
    np.add.at(diff, np.minimum((pop.on_end // bin_s).astype(np.int64), bins), -rate)
    return np.cumsum(diff)[:bins]
