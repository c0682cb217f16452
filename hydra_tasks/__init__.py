"""Hydra: volunteer computing on Celery + Redis.

``hydra_tasks.app`` is the Celery application, so ``celery -A hydra_tasks worker`` works (Celery
looks the attribute up with ``getattr``). It is created on first access (PEP 562), so importing
a light module such as :mod:`hydra_tasks.keys`, :mod:`hydra_tasks.settings` or
:mod:`hydra_tasks.models` loads neither Celery nor numpy nor PyNaCl. The app reads its settings
from ``HYDRA_*`` the first time Celery needs its configuration. The factory lives in
:mod:`hydra_tasks.celery_app` (not ``app.py``: a submodule named ``app`` would be bound to this
same attribute when imported, hiding the Celery instance).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .celery_app import HydraCelery, create_app

    app: HydraCelery

__all__ = ["app", "create_app"]

_lock = threading.RLock()  # re-entrant: a hang at import would be the worst failure


def __getattr__(name: str) -> Any:
    """``app`` (built once, then a plain module attribute) and ``create_app``, on first use."""
    if name == "create_app":
        from .celery_app import create_app

        return create_app
    if name == "app":
        with _lock:
            if "app" not in globals():
                from .celery_app import create_app

                globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
