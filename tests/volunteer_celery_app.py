"""A tiny Celery app for tests/integration/test_volunteers.py only: the volunteer-side Celery
settings the per-volunteer ACL was designed for (the spike's), without Hydra's own app.

Environment: VOLUNTEER_TEST_URL (broker URL), VOLUNTEER_TEST_ROLE (operator | volunteer),
VOLUNTEER_TEST_NAME (the volunteer's name; its node is <name>@hydra), VOLUNTEER_TEST_REGION.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Exchange, Queue

URL = os.environ["VOLUNTEER_TEST_URL"]
ROLE = os.environ.get("VOLUNTEER_TEST_ROLE", "operator")
NAME = os.environ.get("VOLUNTEER_TEST_NAME", "vol")
REGION = os.environ.get("VOLUNTEER_TEST_REGION", "eu")
NODE = f"{NAME}@hydra"
INTAKE = "hydra.intake"

app = Celery("volunteer_test")
conf: dict[str, object] = dict(
    broker_url=URL, result_backend=None, task_serializer="json", event_serializer="json", accept_content=["json"],
    task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1, task_ignore_result=True,
    task_default_queue="hydra.control", worker_send_task_events=False, broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False, broker_transport_options={"visibility_timeout": 3600},
)
if ROLE == "volunteer":
    conf.update(
        worker_enable_remote_control=False,
        worker_direct=False,  # replaced by the explicit, undeclared <node>.dq2 queue below
        broker_transport_options={"visibility_timeout": 3600, "unacked_key": f"hydra.unacked.{NAME}",
                                  "unacked_index_key": f"hydra.unacked_index.{NAME}",
                                  "unacked_mutex_key": f"hydra.unacked_mutex.{NAME}"},
        task_queues=[
            Queue(f"hydra.region.{REGION}", Exchange(f"hydra.region.{REGION}"), routing_key=f"hydra.region.{REGION}",
                  no_declare=True),
            Queue(f"{NODE}.dq2", Exchange("C.dq2", type="direct"), routing_key=NODE, no_declare=True),
            Queue(INTAKE, Exchange(INTAKE), routing_key=INTAKE, no_declare=True),
        ],
    )
app.conf.update(conf)


@app.task(name="vtest.compute", bind=True)
def compute(self: object, x: int) -> None:
    """The volunteer's side: compute, then send the result to the intake queue."""
    app.send_task("hydra.intake", args=[{"x": x, "y": x * x, "node": self.request.hostname}], queue=INTAKE)
