"""An event loop of its own, in a thread of its own, for async task bodies.

The worker's aiohttp loop answers StateFun and runs the pipeline function; an async task body that
blocks its loop (``time.sleep`` in an ``async def``, a CPU-bound loop without ``await``) must not
stop that. So async bodies run here, and the endpoint loop only awaits their outcome with the
task's timeout. A loop that has not run its heartbeat for `WEDGED_AFTER_SECONDS` is *wedged*
(checked by a watchdog on the caller's loop while tasks are pending): new tasks go to a fresh loop
in a new thread, tasks that were queued on the wedged loop but had not started move there too, and
the old loop is left to finish (a thread cannot be killed) and stops by itself once its tasks are
done or cancelled. Tasks already *started* on a wedged loop share its fate: they finish late or
time out.

Why a thread and not the process pool: async bodies are mostly I/O-bound and run many at a time
on one loop; a child process per async task would give that up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: a loop that has not run its heartbeat for this long gets no new tasks
WEDGED_AFTER_SECONDS = 1.0
_BEAT_SECONDS = 0.1


class _Submission:
    """One body handed to a task loop: it either starts there or moves to another loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.state = "queued"  # -> "started" | "moved"

    def start(self) -> bool:
        with self._lock:
            if self.state == "queued":
                self.state = "started"
            return self.state == "started"

    def move(self) -> bool:
        with self._lock:
            if self.state == "queued":
                self.state = "moved"
            return self.state == "moved"


async def _guarded(
    submission: _Submission, make_coro: Callable[[], Coroutine[Any, Any, Any]]
) -> Any:
    if not submission.start():
        return None  # moved to another loop before it started
    return await make_coro()


class _LoopThread:
    def __init__(self, name: str) -> None:
        self.retired: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.loop = asyncio.new_event_loop()
        self.last_beat = time.monotonic()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._beat)
        try:
            self.loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def _beat(self) -> None:
        self.last_beat = time.monotonic()
        self.loop.call_later(_BEAT_SECONDS, self._beat)

    @property
    def wedged_for(self) -> float:
        return time.monotonic() - self.last_beat

    def retire(self, cancel: bool) -> None:
        """Stop once every task on the loop is done (cancelling them first if `cancel`)."""

        async def drain() -> None:
            me = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not me]
            if cancel:
                for task in pending:
                    task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self.loop.stop()

        with contextlib.suppress(RuntimeError):  # already closed
            self.loop.call_soon_threadsafe(lambda: self.loop.create_task(drain()))


class TaskLoop:
    """Runs coroutines on a task event loop thread; replaces the loop when it is wedged."""

    def __init__(self, on_replaced: Callable[[], None] | None = None) -> None:
        self._current: _LoopThread | None = None
        self._generation = 0
        self._on_replaced = on_replaced
        self.replaced = 0
        self._pending = 0
        self._watchdog: asyncio.Task[None] | None = None

    def _retire_if_wedged(self, threshold: float) -> None:
        current = self._current
        if current is None or current.wedged_for <= threshold:
            return
        logger.error(
            "the task event loop has not run for %.1f s (an async task blocks it: "
            "time.sleep or CPU work without await?); new async tasks go to a new loop",
            current.wedged_for,
        )
        current.retire(cancel=False)
        current.retired.set_result(None)
        self._current = None
        self.replaced += 1
        if self._on_replaced is not None:
            self._on_replaced()

    def _loop_thread(self) -> _LoopThread:
        self._retire_if_wedged(WEDGED_AFTER_SECONDS)
        current = self._current
        if current is None:
            self._generation += 1
            current = self._current = _LoopThread(f"flink-tasks-task-loop-{self._generation}")
        return current

    async def run(self, make_coro: Callable[[], Coroutine[Any, Any, T]], timeout: float) -> T:
        """Run `make_coro()` on the task loop; `TimeoutError` (and a cancel) after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._pending += 1
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = loop.create_task(self._watch())
        try:
            while True:
                target = self._loop_thread()
                submission = _Submission()
                future = asyncio.run_coroutine_threadsafe(
                    _guarded(submission, make_coro), target.loop
                )
                # never wait on the wedged loop itself: it may not act on a cancel for a long time
                wrapped = asyncio.wrap_future(future)
                done, _ = await asyncio.wait(
                    {wrapped, target.retired},
                    timeout=max(0.0, deadline - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if wrapped in done:
                    return cast(T, wrapped.result())
                if target.retired in done and submission.move():
                    future.cancel()
                    continue
                if target.retired in done:  # started there: it shares that loop's fate
                    remaining = max(0.0, deadline - loop.time())
                    done, _ = await asyncio.wait({wrapped}, timeout=remaining)
                    if done:
                        return cast(T, wrapped.result())
                future.cancel()
                # a timed-out task whose loop is not even beating is what blocks it: move on now
                if target is self._current:
                    self._retire_if_wedged(3 * _BEAT_SECONDS)
                raise TimeoutError
        finally:
            self._pending -= 1

    async def _watch(self) -> None:
        while self._pending > 0:
            self._retire_if_wedged(WEDGED_AFTER_SECONDS)
            await asyncio.sleep(_BEAT_SECONDS * 2)

    def close(self) -> None:
        """Cancel what still runs and stop the loop thread (it exits once the tasks are done)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._current is not None:
            self._current.retire(cancel=True)
            self._current = None
