"""Keep the parts of a local stack running: restart a dead one after a growing delay, and give up,
with a clear error, on one that keeps dying.

Plain logic with no Celery in it: a :class:`Part` only says how to tell that it has exited and how
to start it again. ``hydra up`` builds the parts from its :class:`~hydra_tasks.stack.LocalStack`.

With the default :class:`RestartPolicy` a part that exits is started again after 1 s, then 2, 4,
8 and 16 s if it keeps exiting (at most 30 s); its 6th exit within 5 minutes stops everything.
Exits older than 5 minutes are forgotten, so a part that dies once a day is restarted every time.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

from .errors import HydraError, StackError


@dataclass(frozen=True)
class RestartPolicy:
    """How often, and after how long, a dead part is started again."""

    max_restarts: int = 5  # within window_s; one more exit gives up
    window_s: float = 300.0
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def delay_s(self, restart: int) -> float:
        """The wait before restart number ``restart`` (1-based): doubling from first_delay_s, capped."""
        return min(self.first_delay_s * 2 ** (restart - 1), self.max_delay_s)


@dataclass(frozen=True)
class Part:
    """One supervised thing: a process, or the embedded Redis."""

    name: str
    exit_code: Callable[[], int | None]  # None while it runs; else how it ended (negative: killed by a signal)
    restart: Callable[[], None]  # start it again and wait until it is ready; HydraError/OSError if it cannot
    log_tail: Callable[[], str] = lambda: "(no log)"


def describe_exit(code: int) -> str:
    """``code -9, killed by SIGKILL`` or ``code 1``."""
    if code < 0:
        try:
            return f"code {code}, killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"code {code}, killed by signal {-code}"
    return f"code {code}"


class Supervisor:
    """Call :meth:`check` now and then (or :meth:`run`): it restarts dead parts and says so through
    ``say``; it raises StackError when a part exits too often to keep going."""

    def __init__(self, parts: Sequence[Part], *, policy: RestartPolicy = RestartPolicy(),
                 say: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic) -> None:
        names = [part.name for part in parts]
        if len(set(names)) != len(names):
            raise StackError(f"Supervised parts need distinct names; got {names}.")
        self.parts = list(parts)
        self.policy = policy
        self._say = say
        self._clock = clock
        self._exits: dict[str, deque[float]] = {name: deque() for name in names}
        self._due: dict[str, float] = {}  # part name -> when to start it again

    def waiting(self) -> dict[str, float]:
        """Parts waiting to be restarted, and in how many seconds."""
        now = self._clock()
        return {name: max(due - now, 0.0) for name, due in self._due.items()}

    def check(self) -> None:
        """Notice parts that exited since the last check; restart those whose delay is over."""
        for part in self.parts:
            due = self._due.get(part.name)
            if due is not None:
                if self._clock() >= due:
                    del self._due[part.name]
                    self._restart(part)
                continue
            code = part.exit_code()
            if code is not None:
                self._failed(part, f"exited ({describe_exit(code)})")

    def run(self, *, poll_s: float = 0.5) -> None:
        """Check until an exception ends it: StackError (a part cannot be kept running) or Ctrl-C."""
        while True:
            self.check()
            time.sleep(poll_s)

    def _restart(self, part: Part) -> None:
        try:
            part.restart()
        except (HydraError, OSError) as exc:
            self._failed(part, f"did not start again ({exc})")
            return
        self._say(f"{part.name} restarted")

    def _failed(self, part: Part, what: str) -> None:
        now = self._clock()
        exits = self._exits[part.name]
        exits.append(now)
        while exits[0] < now - self.policy.window_s:
            exits.popleft()
        if len(exits) > self.policy.max_restarts:
            raise StackError(
                f"{part.name} {what}: {len(exits)} failures within {self.policy.window_s:g} s, so Hydra gave up "
                f"and stopped everything. Fix the cause (its log ends below) and start again.\n{part.log_tail()}"
            )
        delay = self.policy.delay_s(len(exits))
        self._say(f"{part.name} {what}; restarting in {delay:g} s (restart {len(exits)} of "
                  f"{self.policy.max_restarts} allowed within {self.policy.window_s:g} s)")
        self._due[part.name] = now + delay
