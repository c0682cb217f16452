"""The supervisor restarts dead processes with a growing delay and gives up on one that keeps dying.

The supervised parts are real child processes (no Celery needed)."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Iterator

import pytest

from hydra_tasks.errors import StackError
from hydra_tasks.supervise import Part, RestartPolicy, Supervisor, describe_exit


class Child:
    """A real process that can be started again: what a Part wraps."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.starts = 0
        self.popen = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        return subprocess.Popen([sys.executable, "-c", self.code])

    def restart(self) -> None:
        self.popen = self._start()

    def part(self, name: str) -> Part:
        return Part(name, lambda: self.popen.poll(), self.restart, lambda: f"{name}: last words")


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        if child.popen.poll() is None:
            child.popen.kill()
            child.popen.wait()


def _check_until(supervisor: Supervisor, done: object, *, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        supervisor.check()
        time.sleep(0.01)


def test_restart_delays_double_from_1_s_up_to_30_s() -> None:
    assert [RestartPolicy().delay_s(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_exit_codes_are_described_with_the_signal_that_killed_the_process() -> None:
    assert describe_exit(-9) == "code -9, killed by SIGKILL"
    assert describe_exit(3) == "code 3"


def test_a_killed_process_is_restarted_after_the_delay_and_the_others_are_left_alone(
        children: list[Child]) -> None:
    victim, bystander = Child("import time; time.sleep(60)"), Child("import time; time.sleep(60)")
    children += [victim, bystander]
    said: list[str] = []
    supervisor = Supervisor([victim.part("worker"), bystander.part("webapp")],
                            policy=RestartPolicy(first_delay_s=0.2), say=said.append)
    bystander_pid = bystander.popen.pid
    victim.popen.kill()
    victim.popen.wait()
    supervisor.check()
    assert said == ["worker exited (code -9, killed by SIGKILL); restarting in 0.2 s "
                    "(restart 1 of 5 allowed within 300 s)"]
    assert victim.starts == 1 and 0 < supervisor.waiting()["worker"] <= 0.2
    _check_until(supervisor, lambda: victim.starts == 2)
    assert said[-1] == "worker restarted"
    assert victim.popen.poll() is None and bystander.popen.pid == bystander_pid and bystander.starts == 1


def test_a_process_that_keeps_dying_makes_the_supervisor_give_up_with_its_log(children: list[Child]) -> None:
    crasher = Child("raise SystemExit(3)")
    children.append(crasher)
    said: list[str] = []
    supervisor = Supervisor([crasher.part("flower")], policy=RestartPolicy(max_restarts=2, first_delay_s=0.05),
                            say=said.append)
    with pytest.raises(StackError) as failure:
        _check_until(supervisor, lambda: False)
    message = str(failure.value)
    assert "flower exited (code 3): 3 failures within 300 s" in message and "gave up" in message
    assert message.endswith("flower: last words")
    assert crasher.starts == 3
    assert [line.split(";")[1].strip() for line in said if "exited" in line] == [
        "restarting in 0.05 s (restart 1 of 2 allowed within 300 s)",
        "restarting in 0.1 s (restart 2 of 2 allowed within 300 s)"]


def test_exits_older_than_the_window_are_forgotten(children: list[Child]) -> None:
    now = [1000.0]
    crasher = Child("raise SystemExit(1)")
    children.append(crasher)
    said: list[str] = []
    supervisor = Supervisor([crasher.part("control")], policy=RestartPolicy(max_restarts=1, window_s=60),
                            say=said.append, clock=lambda: now[0])
    for _ in range(4):  # one exit a minute and a bit: never two within the window
        crasher.popen.wait()
        supervisor.check()
        assert said[-1].startswith("control exited (code 1); restarting in 1 s (restart 1 of 1")
        now[0] += 61
        supervisor.check()
        assert said[-1] == "control restarted"
    assert crasher.starts == 5


def test_a_restart_that_fails_counts_as_another_failure(children: list[Child]) -> None:
    child = Child("import time; time.sleep(60)")
    children.append(child)

    def cannot_start() -> None:
        raise StackError("port 5000 is taken")

    said: list[str] = []
    supervisor = Supervisor([Part("webapp", lambda: child.popen.poll(), cannot_start)],
                            policy=RestartPolicy(first_delay_s=0.01), say=said.append)
    child.popen.kill()
    child.popen.wait()
    _check_until(supervisor, lambda: len(said) >= 2)
    assert said[1].startswith("webapp did not start again (port 5000 is taken); restarting in 0.02 s (restart 2 of 5")
