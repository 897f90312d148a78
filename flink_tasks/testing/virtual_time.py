"""Virtual time for the in-process environment: delayed messages (retry back-offs, deadlines,
progress checks, retention) wait on a clock that jumps straight to the next one when nothing
else can happen, so a test of a 30 s back-off runs in milliseconds.

The clock jumps only while the environment is idle and someone waits for it: no message is in
flight, no task body is running in the worker, and a client call is waiting for a reply. So a
task body that sleeps for real still takes its real time (and leases, which follow the clock,
never expire under it), and a finished pipeline's retention timer does not fire while the test
looks at its result afterwards.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable

from flink_tasks._proto import messages_pb2


class VirtualClock:
    """Milliseconds that advance only by `advance`; starts at the wall clock's now."""

    def __init__(self, start_ms: int | None = None) -> None:
        self.now_ms = int(time.time() * 1000) if start_ms is None else start_ms
        self._timers: list[tuple[int, int, Callable[[], None]]] = []
        self._sequence = itertools.count()

    def __call__(self) -> int:
        """The engine's clock (`flink_tasks.engine.Clock`)."""
        return self.now_ms

    def call_later(self, delay_ms: int, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the clock has advanced ``delay_ms``."""
        due = self.now_ms + max(0, delay_ms)
        heapq.heappush(self._timers, (due, next(self._sequence), callback))

    @property
    def next_due(self) -> int | None:
        """When the earliest timer is due (ms), or None."""
        return self._timers[0][0] if self._timers else None

    @property
    def pending(self) -> int:
        """Timers not yet due."""
        return len(self._timers)

    def advance(self) -> bool:
        """Jump to the earliest timer and run every timer due then; False if there is none."""
        if not self._timers:
            return False
        self.now_ms = max(self.now_ms, self._timers[0][0])
        while self._timers and self._timers[0][0] <= self.now_ms:
            _, _, callback = heapq.heappop(self._timers)
            callback()
        return True

    def clear(self) -> None:
        """Drop every timer (the runtime is closing)."""
        self._timers.clear()


class RunningTasks:
    """A worker hook counting task bodies that run now (the clock never jumps under one)."""

    def __init__(self, on_idle: Callable[[], None]) -> None:
        self.count = 0
        self._on_idle = on_idle

    def task_received(self, request: messages_pb2.TaskRequest) -> None:
        self.count += 1

    def task_started(self, request: messages_pb2.TaskRequest) -> None:
        pass

    def task_retried(self, request: messages_pb2.TaskRequest) -> None:
        pass

    def task_finished(
        self, request: messages_pb2.TaskRequest, result: messages_pb2.TaskResult
    ) -> None:
        self.count -= 1
        if self.count == 0:
            self._on_idle()
