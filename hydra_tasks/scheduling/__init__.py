"""Planning, routing, dispatching and sweeping: how chunks reach workers and come back."""

from __future__ import annotations

from typing import Any, Callable

#: publish(chunk_json, attempt, worker_id, region) sends the compute task to that worker's own
#: queue. The scheduling modules take it as an argument, so they need no Celery.
Publish = Callable[[dict[str, Any], int, str, str], None]

#: publish_bundle([(chunk_json, attempt), ...], worker_id, region) sends several chunks leased to one
#: worker as one compute message (``hydra.compute_bundle``; see grants.bundle_size).
PublishBundle = Callable[[list[tuple[dict[str, Any], int]], str, str], None]
