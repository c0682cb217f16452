"""A plain Celery app with one no-op task and nothing of Hydra: the reference that
``benchmarks/overhead.py`` measures Hydra's control plane against, on the same Redis server.

JSON only, results in Redis (``delay().get()`` needs them), the queue ``plain``. Its worker runs as
``python -m celery -A plain_celery worker -Q plain`` with ``benchmarks/`` on ``PYTHONPATH`` and the
broker URL in ``PLAIN_CELERY_URL``; the benchmark's client makes its own app with :func:`make_app`.
"""

from __future__ import annotations

import os

from celery import Celery


def make_app(url: str) -> Celery:
    """The plain app on the Redis at ``url`` (broker and result backend), with its task ``plain.noop``."""
    plain = Celery("plain_celery", broker=url, backend=url)
    plain.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                      task_default_queue="plain", broker_connection_retry_on_startup=True, result_expires=600,
                      worker_hijack_root_logger=False)

    @plain.task(name="plain.noop", shared=False)
    def noop(x: int = 0) -> int:
        return x

    return plain


app = make_app(os.environ.get("PLAIN_CELERY_URL", "redis://127.0.0.1:6379/0"))
