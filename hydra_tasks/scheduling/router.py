"""Routers choose the region queue for the next chunk.

The interface is one method, :meth:`Router.choose`, given the cluster snapshot and the free
slots per region. :class:`CapacityRouter` is the carbon-blind policy: among regions with live
workers and a free slot, it prefers the one with the most free capacity, so work spreads in
proportion to measured capacity.
"""

from __future__ import annotations

from typing import Mapping, Protocol

from .cluster import ClusterSnapshot


class Router(Protocol):
    def choose(self, snapshot: ClusterSnapshot, free_slots: Mapping[str, int]) -> str | None:
        """The region for the next chunk, or None if no region can take one now."""
        ...


class CapacityRouter:
    """Capacity-proportional routing: pick the region whose free share of capacity is largest."""

    def choose(self, snapshot: ClusterSnapshot, free_slots: Mapping[str, int]) -> str | None:
        best, best_score = None, 0.0
        for name, region in snapshot.regions.items():
            free = free_slots.get(name, 0)
            if free <= 0 or region.slots <= 0:
                continue
            score = free / region.slots * region.capacity
            if score > best_score:
                best, best_score = name, score
        return best


def default_router() -> Router:
    return CapacityRouter()
