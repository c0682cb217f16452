"""Routers choose the worker (and so the region) for the next chunk.

The interface is one method, :meth:`Router.choose`, given the cluster snapshot and the free
slots per worker. :class:`CapacityRouter` is the carbon-blind policy: among workers with a free
slot it prefers the one with the most free capacity (free share of its slots x its measured
speed), so work spreads in proportion to capacity and the fastest idle worker goes first.
"""

from __future__ import annotations

from typing import Mapping, Protocol

from .cluster import ClusterSnapshot


class Router(Protocol):
    def choose(self, snapshot: ClusterSnapshot, free_slots: Mapping[str, int], kind: str) -> str | None:
        """The worker id for the next chunk of a ``kind`` job, or None if no worker can take one."""
        ...


class CapacityRouter:
    """Capacity-proportional routing: the worker whose free share of capacity is largest."""

    def choose(self, snapshot: ClusterSnapshot, free_slots: Mapping[str, int], kind: str) -> str | None:
        best, best_score = None, 0.0
        for worker_id, worker in snapshot.workers.items():
            free, slots = free_slots.get(worker_id, 0), snapshot.slots.get(worker_id, 0)
            if free <= 0 or slots <= 0:
                continue
            score = free / slots * worker.rate(kind)
            if score > best_score:
                best, best_score = worker_id, score
        return best


def default_router() -> Router:
    return CapacityRouter()
