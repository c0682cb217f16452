"""Prometheus metrics (issue 13, item 2): what ``GET /metrics`` serves, read from Redis at each scrape.

:class:`HydraCollector` is a ``prometheus_client`` custom collector: every scrape reads the current
state in a few pipelined round trips and yields metric families; nothing is kept in the process, so
any number of webapp processes serve the same numbers. Job counters are sums over the live jobs plus
the totals FINISH adds every finished job to (so a deleted job's counts stay in them, and a scrape
reads O(live jobs), not every job ever held), or Hydra-wide counters that only grow (the ledger's,
the intake's drops, the spot checks).

Names follow Prometheus conventions: ``hydra_`` prefix, base units (grams, joules), ``_total`` for
counters (added by the client library). ``webapp/monitoring/grafana-dashboard.json`` charts them.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from . import keys
from .grid.regions import parse_regions
from .models import JobState, WorkerState
from .settings import Settings
from .worker.registry import list_workers

#: job-hash counters summed over all jobs: (field, metric name, help)
JOB_COUNTERS = (  # the fields are keys.JOB_TOTAL_COUNTERS (tests/unit/test_key_schema.py checks)
    ("dispatched", "hydra_chunks_dispatched", "Chunk leases granted (a re-sent chunk counts again)"),
    ("chunks_done", "hydra_chunks_merged", "Chunk results merged (exactly once per chunk)"),
    ("rejections", "hydra_chunks_rejected", "Chunk results that failed verification or a spot check"),
    ("expiries", "hydra_chunks_expired", "Chunk leases that expired (the chunk was re-sent)"),
    ("failures", "hydra_chunks_failed", "Chunk results reporting a kernel error"),
    ("recomputed", "hydra_chunks_recomputed", "Merged results taken back because their worker was caught"),
    ("audits_done", "hydra_audit_chunks_settled_by_workers", "Audit chunks settled by the auditor that ran them"),
    ("audits_local", "hydra_audit_chunks_settled_here", "Audit chunks settled on the control plane"),
)


class HydraCollector:
    """Reads Hydra's state from Redis at each scrape (see the module docstring)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client, self.settings = client, settings

    def collect(self) -> Iterator[Metric]:
        yield from self._jobs()
        yield from self._workers()
        yield from self._queues()
        yield from self._ledger_and_carbon()

    # --- jobs -----------------------------------------------------------------------------
    def _jobs(self) -> Iterable[Metric]:
        """Live jobs are read one by one (O(live jobs)); finished ones come from the totals FINISH keeps
        (``hydra:jobs:totals``), so a scrape costs the same with ten or a million finished jobs."""
        job_ids = self.client.zrange(keys.JOBS_ACTIVE, 0, -1)
        fields = ["state"] + [f for f, _, _ in JOB_COUNTERS]
        reads = self.client.pipeline(transaction=False)
        reads.hgetall(keys.JOBS_TOTALS)
        for job_id in job_ids:
            reads.hmget(keys.job(job_id), fields)
        totals, *rows = reads.execute()
        by_state = {state.value: int(totals.get(state.value, 0)) if state.is_final else 0 for state in JobState}
        sums = [int(totals.get(f, 0)) for f, _, _ in JOB_COUNTERS]
        for row in rows:
            if row[0] in by_state and not JobState(row[0]).is_final:  # one that ended meanwhile is in the totals
                by_state[row[0]] += 1
                for i, value in enumerate(row[1:]):
                    sums[i] += int(value or 0)
        jobs = GaugeMetricFamily("hydra_jobs", "Jobs by state", labels=["state"])
        for state, n in by_state.items():
            jobs.add_metric([state], n)
        yield jobs
        for (_, name, doc), total in zip(JOB_COUNTERS, sums):
            yield CounterMetricFamily(name, doc, value=total)

    # --- workers ----------------------------------------------------------------------------
    def _workers(self) -> Iterable[Metric]:
        workers = list_workers(self.client)
        counts: dict[tuple[str, str], int] = {}
        for w in workers:
            state = "quarantined" if w.quarantined else w.state.value
            counts[(state, w.region)] = counts.get((state, w.region), 0) + 1
        by_state = GaugeMetricFamily("hydra_workers", "Registered workers by state and region",
                                     labels=["state", "region"])
        for state in [s.value for s in WorkerState] + ["quarantined"]:
            for region in sorted({w.region for w in workers}):
                by_state.add_metric([state, region], counts.get((state, region), 0))
        yield by_state
        speed = GaugeMetricFamily("hydra_worker_speed", "Measured speed of each worker (π samples/s; Mandelbrot "
                                  "iterations/s)", labels=["worker", "region", "kind"])
        reputation = GaugeMetricFamily("hydra_worker_reputation", "Audits a worker passed since it was last caught",
                                       labels=["worker", "region"])
        for w in workers:
            if w.state is not WorkerState.OFFLINE:
                for kind in ("pi", "mandelbrot"):
                    speed.add_metric([w.worker_id, w.region, kind], w.rate(kind))
                reputation.add_metric([w.worker_id, w.region], w.reputation)
        yield speed
        yield reputation

    # --- queues -----------------------------------------------------------------------------
    def _queues(self) -> Iterable[Metric]:
        regions = set(parse_regions(self.settings.regions)) | {w.region for w in list_workers(self.client)}
        queues = [keys.CONTROL_QUEUE, keys.INTAKE_QUEUE, *sorted(keys.region_queue(r) for r in regions)]
        reads = self.client.pipeline(transaction=False)
        for queue in queues:
            for name in keys.priority_queues(queue):
                reads.llen(name)
        reads.zcard(keys.LEASES)
        reads.zcard(keys.AUDITS)
        depths = reads.execute()
        per = len(keys.priority_queues(keys.CONTROL_QUEUE))
        depth = GaugeMetricFamily("hydra_queue_depth", "Messages waiting in a broker queue (all priorities)",
                                  labels=["queue"])
        for i, queue in enumerate(queues):
            depth.add_metric([queue], sum(int(n) for n in depths[i * per:(i + 1) * per]))
        yield depth
        yield GaugeMetricFamily("hydra_leases", "Chunks leased to workers now", value=int(depths[-2]))
        yield GaugeMetricFamily("hydra_audits_waiting", "Audit chunks waiting for an auditor", value=int(depths[-1]))

    # --- ledger, carbon, security ----------------------------------------------------------------
    def _ledger_and_carbon(self) -> Iterable[Metric]:
        reads = self.client.pipeline(transaction=False)
        reads.hgetall(keys.LEDGER_STATS)
        reads.hgetall(keys.SUSTAINABILITY)
        reads.hgetall(keys.INTAKE_DROPPED)
        reads.hgetall(keys.RESULTS_DROPPED)
        reads.hgetall(keys.SPOT_CHECKS)
        ledger, carbon, intake, results, checks = reads.execute()
        for field, name, doc in (("minted", "hydra_tokens_minted_micro", "Micro-tokens ever minted"),
                                 ("transferred", "hydra_tokens_transferred_micro", "Micro-tokens ever transferred"),
                                 ("reversed", "hydra_tokens_reversed_micro",
                                  "Micro-tokens taken back from workers caught cheating")):
            yield CounterMetricFamily(name, doc, value=int(ledger.get(field, 0)))
        yield GaugeMetricFamily("hydra_tokens_supply_micro", "Micro-tokens in existence",
                                value=int(ledger.get("supply", 0)))
        for field, name, doc in (
                ("carbon_g", "hydra_carbon_grams", "CO2 emitted by accepted chunks (g)"),
                ("counterfactual_g", "hydra_carbon_counterfactual_grams",
                 "CO2 carbon-blind routing would have emitted for the same chunks (g)"),
                ("energy_j", "hydra_energy_joules", "Energy of accepted chunks (J)"),
                ("renewable_kwh", "hydra_renewable_kwh", "Energy from on-site renewables (kWh)")):
            yield CounterMetricFamily(name, doc, value=float(carbon.get(field, 0.0)))
        dropped = CounterMetricFamily("hydra_intake_dropped", "Intake messages dropped, by reason", labels=["reason"])
        for reason, n in sorted(intake.items()):
            dropped.add_metric([reason], int(n))
        yield dropped
        forged = CounterMetricFamily("hydra_results_dropped", "Results in a keyed worker's name not signed by it",
                                     labels=["reason"])
        for reason, n in sorted(results.items()):
            forged.add_metric([reason], int(n))
        yield forged
        spot = CounterMetricFamily("hydra_spot_checks", "Results audited, by outcome", labels=["outcome"])
        for outcome in ("passed", "failed"):
            spot.add_metric([outcome], int(checks.get(outcome, 0)))
        yield spot
        recomputed = CounterMetricFamily("hydra_audit_work", "Work recomputed to audit results (π samples, "
                                         "Mandelbrot pixels), by kind and where", labels=["kind", "where"])
        for name, value in sorted(checks.items()):
            where, _, kind = name.partition(":")
            if where in ("units", "remote") and kind:
                recomputed.add_metric([kind, "control plane" if where == "units" else "audit chunks"], int(value))
        yield recomputed


def exposition(client: redis.Redis, settings: Settings) -> bytes:
    """The Prometheus text exposition of Hydra's metrics now (a fresh registry per scrape)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HydraCollector(client, settings))
    return generate_latest(registry)
