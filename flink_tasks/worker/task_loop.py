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

Hand-offs are batched: bodies submitted while the task loop has not yet taken the previous ones go
over in one wake-up, and outcomes come back to the caller's loop in one wake-up per batch. A
wake-up per body and per outcome (``run_coroutine_threadsafe``) made every task cost two thread
switches; on a busy machine each switch waits for the GIL and the scheduler, and a load of
100 x 1,000 trivial async tasks ran at half the speed of running them on the caller's loop
(docs/benchmarks.md, "Async task hand-off").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: a loop that has not run its heartbeat for this long gets no new tasks
WEDGED_AFTER_SECONDS = 1.0
_BEAT_SECONDS = 0.1


class _Submission:
    """One body handed to a task loop: it either starts there or moves to another loop. Its
    outcome is set on `outcome`, a future of the caller's loop, by the caller's loop."""

    def __init__(
        self,
        make_coro: Callable[[], Coroutine[Any, Any, Any]],
        outcome: asyncio.Future[Any],
    ) -> None:
        self._lock = threading.Lock()
        self.state = "queued"  # -> "started" | "moved"
        self.make_coro = make_coro
        self.outcome = outcome
        self.task: asyncio.Task[Any] | None = None  # on the task loop, once taken

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


async def _guarded(submission: _Submission) -> Any:
    if not submission.start():
        return None  # moved to another loop before it started
    return await submission.make_coro()


def _settle(outcome: asyncio.Future[Any], task: asyncio.Task[Any]) -> None:
    """On the caller's loop: copy a finished task-loop task's outcome to its caller."""
    if task.cancelled():
        if not outcome.done():
            outcome.cancel()
        return
    error = task.exception()  # read even when nobody waits: no "never retrieved" warning
    if outcome.done():
        return  # the caller gave up (timeout, cancel)
    if error is not None:
        outcome.set_exception(error)
    else:
        outcome.set_result(task.result())


def _settle_all(items: list[tuple[asyncio.Future[Any], asyncio.Task[Any]]]) -> None:
    for outcome, task in items:
        _settle(outcome, task)


class _Mailbox:
    """Items handed from one thread to one loop, taken in batches: the loop is woken once per
    batch, not once per item."""

    def __init__(self, loop: asyncio.AbstractEventLoop, take: Callable[[list[Any]], None]) -> None:
        self._loop = loop
        self._take = take
        self._lock = threading.Lock()
        self._items: list[Any] = []

    def put(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)
            if len(self._items) > 1:
                return  # a wake-up for this batch is already on its way
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        self._take(items)


class _LoopThread:
    def __init__(self, name: str) -> None:
        caller = asyncio.get_running_loop()
        self.retired: asyncio.Future[None] = caller.create_future()
        self.loop = asyncio.new_event_loop()
        self.inbox = _Mailbox(self.loop, self._start_all)
        self.outbox = _Mailbox(caller, _settle_all)
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

    def _start_all(self, submissions: list[_Submission]) -> None:
        """On the task loop: start a batch of bodies; each outcome goes back through the outbox."""
        for submission in submissions:
            task = self.loop.create_task(_guarded(submission))
            submission.task = task
            task.add_done_callback(functools.partial(self._finished, submission.outcome))

    def _finished(self, outcome: asyncio.Future[Any], task: asyncio.Task[Any]) -> None:
        self.outbox.put((outcome, task))

    def cancel(self, submission: _Submission) -> None:
        """Cancel a body that was handed to this loop (from the caller's thread)."""

        def cancel_there() -> None:
            if submission.task is not None:
                submission.task.cancel()

        with contextlib.suppress(RuntimeError):  # already closed
            self.loop.call_soon_threadsafe(cancel_there)

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
                outcome: asyncio.Future[T] = loop.create_future()
                submission = _Submission(make_coro, outcome)
                target.inbox.put(submission)
                # never wait on the wedged loop itself: it may not act on a cancel for a long time
                waiters: set[asyncio.Future[Any]] = {outcome, target.retired}
                done, _ = await asyncio.wait(
                    waiters,
                    timeout=max(0.0, deadline - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if outcome in done:
                    return outcome.result()
                if target.retired in done and submission.move():
                    continue
                if target.retired in done:  # started there: it shares that loop's fate
                    remaining = max(0.0, deadline - loop.time())
                    done, _ = await asyncio.wait({outcome}, timeout=remaining)
                    if done:
                        return outcome.result()
                outcome.cancel()
                target.cancel(submission)
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
