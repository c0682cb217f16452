"""Shared fixtures. Integration fixtures start a real Redis and real Celery worker processes."""

from __future__ import annotations

from typing import Iterator

import pytest

from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.embedded import EmbeddedRedis
from hydra_tasks.settings import Settings
from hydra_tasks.stack import LocalStack
from support import FAST


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real embedded Redis for the module, by URL (for tests that build their own apps on it)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis") / "redis")
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HydraCelery]:
    """A real embedded Redis and an app bound to it, with no workers (for lifecycle tests)."""
    data_dir = tmp_path_factory.mktemp("hydra-redis")
    server = EmbeddedRedis(data_dir / "redis")
    url = server.start()
    try:
        yield create_app(Settings().with_(redis_url=url, data_dir=data_dir, **FAST))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def app(stack: LocalStack) -> HydraCelery:
    """An app bound to the module's running stack (modules with a real stack define ``stack``)."""
    return create_app(stack.child_settings())
