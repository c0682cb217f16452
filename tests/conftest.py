"""Shared fixtures. Integration fixtures start a real Redis and real Celery worker processes."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.embedded import EmbeddedRedis
from hydra_tasks.settings import Settings
from hydra_tasks.stack import LocalStack
from support import FAST, print_logs


#: Test files that kill processes on purpose or build network namespaces: run one after another
#: (never two at once, so that none competes for the CPU with another's timeouts)
SERIAL_DIRS = ("tests/cluster/", "tests/fault/")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``make test TEST_PROCESSES=2`` runs the suite on 2 processes (pytest-xdist, ``-n 2 --dist
    loadfile``): each file's tests stay together on one process (a module's stack starts once, and its
    tests may build on each other), and the files under :data:`SERIAL_DIRS` form a single unit, run
    first, on one process. (Not the default: see the Makefile.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FilesAndSerialFaults(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "serial faults" if path.startswith(SERIAL_DIRS) else path

    config.option.loadscopereorder = False  # collection order: tests/cluster and tests/fault come first
    return FilesAndSerialFaults(config, log)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test item (``item.rep_call``), for :func:`logs_of_a_failed_test`."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(autouse=True)
def logs_of_a_failed_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """When a test that uses a running stack fails, print the end of every process's log: what each part
    did is often the only clue to a failure seen once in CI (the module's stack lives on after it)."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "stack" in request.fixturenames:
        stack = request.getfixturevalue("stack")
        if isinstance(stack, LocalStack):
            print_logs(stack)


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
