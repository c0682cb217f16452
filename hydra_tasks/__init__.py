"""Hydra: volunteer computing on Celery + Redis.

``app`` is the Celery application, so ``celery -A hydra_tasks worker`` works. It reads its
settings from ``HYDRA_*`` the first time Celery needs its configuration.
"""

from .app import create_app

app = create_app()

__all__ = ["app", "create_app"]
