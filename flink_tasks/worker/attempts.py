"""The task attempts a worker process is running, and the leases of those that outlive their
request-reply call.

StateFun delivers a task request at least once: after a restore from a checkpoint the same
attempt may come again while it still runs here. It is then joined, not run twice. A detached
attempt (answered to StateFun with a lease) sends a heartbeat every third of its lease and then
its result through the report sink; the pipeline applies one result per attempt.

A task bucket's call is answered within the batch wait, sooner than a call of its own would be
(`hold`). Until that later moment an attempt's beats say `redeliverable`, and one beat more says
when it has passed: a worker lost before then has its attempt sent again by the pipeline, as
StateFun would have delivered the call again; one lost after fails as `WorkerLostError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from flink_tasks._proto import messages_pb2
from flink_tasks.errors import SerializationError
from flink_tasks.worker.execute import failure_result
from flink_tasks.worker.reports import ReportSink

logger = logging.getLogger(__name__)

AttemptKey = tuple[str, str, int, int]  # pipeline, task id, attempt, invocation
RunTask = Callable[
    [messages_pb2.TaskRequest, Callable[[], None]], Awaitable[messages_pb2.TaskResult]
]


@dataclass
class Attempt:
    """One running task attempt."""

    reply_to: str
    request: messages_pb2.TaskRequest
    future: asyncio.Task[messages_pb2.TaskResult] = field(init=False, repr=False)
    beat: int = 0
    #: the newest delivery of the request joined here (`TaskRequest.delivery`)
    delivery: int = 0
    received: float = field(default_factory=time.monotonic)
    reporter: asyncio.Task[None] | None = field(default=None, repr=False)
    #: for a batched request, the waits of a call of its own (inline, queue), from `detach`;
    #: None otherwise
    own_call_waits: tuple[float, float] | None = None
    #: the last beat said `redeliverable`
    said_redeliverable: bool = False
    #: when its body got a pool slot (`time.monotonic`), None while it queues for one
    started_at: float | None = None
    _start_waiter: asyncio.Future[None] | None = field(default=None, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    def mark_started(self) -> None:
        """Called when the body starts, from the event loop or a pool thread; only the first
        call counts (inlined chain steps call it per step)."""
        if self.started_at is not None:
            return
        self.started_at = time.monotonic()
        waiter = self._start_waiter
        if waiter is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(_settle, waiter)

    def start_signal(self) -> asyncio.Future[None]:
        """A future done once the body has started (for `hold`)."""
        if self._start_waiter is None:
            self._loop = asyncio.get_running_loop()
            self._start_waiter = self._loop.create_future()
            if self.started_at is not None:
                self._start_waiter.set_result(None)
        return self._start_waiter

    def running(self, lease_ms: int) -> bytes:
        """A `WorkerReport` renewing the lease at the current beat."""
        r = self.request
        self.said_redeliverable = time.monotonic() < self.own_call_answered_at()
        return messages_pb2.WorkerReport(
            running=messages_pb2.TaskRunning(
                task_id=r.task_id,
                attempt=r.attempt or 1,
                invocation=r.invocation,
                slot=r.slot,
                beat=self.beat,
                lease_ms=lease_ms,
                delivery=self.delivery,
                redeliverable=self.said_redeliverable,
            )
        ).SerializeToString()

    def own_call_answered_at(self) -> float:
        """When a call of its own would have been answered (`hold`): after `inline_wait` of
        running, or `queue_wait` after it came; -inf unless its request was batched."""
        if self.own_call_waits is None:
            return float("-inf")
        inline_wait, queue_wait = self.own_call_waits
        due = self.received + queue_wait
        return due if self.started_at is None else min(due, self.started_at + inline_wait)

    def detach(self, sink: ReportSink, lease_ms: int, own_call_waits: tuple[float, float]) -> bytes:
        """Start reporting through `sink` (once); the first lease goes back in the call.
        `own_call_waits`: the worker's (inline wait, queue wait), what a call of its own holds."""
        if self.reporter is None:
            if self.request.batched:
                self.own_call_waits = own_call_waits
            self.reporter = asyncio.ensure_future(self._report(sink, lease_ms))
        return self.running(lease_ms)

    async def _report(self, sink: ReportSink, lease_ms: int) -> None:
        interval = lease_ms / 3000
        next_beat = time.monotonic() + interval
        while not self.future.done():
            wake = next_beat
            waits: set[asyncio.Future[Any]] = {self.future}
            if self.said_redeliverable:  # one beat more once that has passed
                wake = min(wake, self.own_call_answered_at())
                if self.started_at is None:  # starting moves that moment
                    waits.add(self.start_signal())
            await asyncio.wait(
                waits, timeout=max(0.0, wake - time.monotonic()), return_when=FIRST_COMPLETED
            )
            now = time.monotonic()
            if self.future.done():
                break
            passed = self.said_redeliverable and now >= self.own_call_answered_at()
            if now >= next_beat or passed:
                self.beat += 1
                sink.send(self.reply_to, self.running(lease_ms))
                next_beat = now + interval
        if self.future.cancelled():
            return  # the worker is stopping: the lease expires and the policy decides
        report = messages_pb2.WorkerReport(result=self.future.result())
        if report.ByteSize() > sink.max_report_bytes:
            report = messages_pb2.WorkerReport(result=self._too_large(report, sink))
        sink.send(self.reply_to, report.SerializeToString())

    def _too_large(
        self, report: messages_pb2.WorkerReport, sink: ReportSink
    ) -> messages_pb2.TaskResult:
        """The attempt's failure: its result outlived the call and is above what the
        task-reports path carries (a Kafka record), so it cannot reach the pipeline."""
        task_type = self.request.task_type
        return failure_result(
            self.request,
            SerializationError(
                f"the result of {task_type!r} is {report.ByteSize()} bytes and the task ran past "
                f"the worker's inline wait, so it goes over the task-reports topic, whose limit "
                f"is {sink.max_report_bytes} bytes; return it within the inline wait "
                "(serve --inline-wait), or build a large pipeline from smaller orchestrator tasks"
            ),
        )


class RunningAttempts:
    """The attempts running in this process, by pipeline, task id, attempt and generation."""

    def __init__(self) -> None:
        self._running: dict[AttemptKey, Attempt] = {}

    def __len__(self) -> int:
        return len(self._running)

    def start(
        self,
        reply_to: str,
        request: messages_pb2.TaskRequest,
        run: RunTask,
    ) -> Attempt:
        """The attempt for `request`: the one already running here, or a new one; `run` gets
        the request and the callback to call when its body starts."""
        key = (reply_to, request.task_id, request.attempt or 1, request.invocation)
        attempt = self._running.get(key)
        if attempt is not None:
            logger.info("task %s attempt %d delivered again: joined", *key[1:3])
            attempt.delivery = max(attempt.delivery, request.delivery)
            return attempt
        attempt = self._running[key] = Attempt(reply_to, request, delivery=request.delivery)
        future = attempt.future = asyncio.ensure_future(run(request, attempt.mark_started))
        future.add_done_callback(lambda _: self._forget(key, attempt))
        return attempt

    def _forget(self, key: AttemptKey, attempt: Attempt) -> None:
        if attempt.reporter is None or attempt.reporter.done():
            self._running.pop(key, None)
        else:
            attempt.reporter.add_done_callback(lambda _: self._running.pop(key, None))

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` s for every attempt (and its report), then cancel the rest."""
        pending: set[asyncio.Future[object]] = set()
        for attempt in self._running.values():
            pending.add(attempt.future)  # type: ignore[arg-type]
            if attempt.reporter is not None:
                pending.add(attempt.reporter)  # type: ignore[arg-type]
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(BaseException):
                await task


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def hold(attempts: list[Attempt], inline_wait: float, queue_wait: float) -> None:
    """Wait while a batch's call may still be held: until every attempt is done, or one has
    run for `inline_wait` s, and never longer than the longer of the two waits since the call
    came. The inline wait counts from each body's start, so a queue for the pool's slots holds
    StateFun's calls instead of turning into leases, and StateFun's bound on calls in flight
    (``statefun.async.max-per-task``) holds the rest back: admission control."""
    received = time.monotonic()
    futures = {attempt.future for attempt in attempts}
    _, pending = await asyncio.wait(futures, timeout=inline_wait)
    while pending:  # the slow path: some attempt queued or ran long
        now = time.monotonic()
        due = received + queue_wait
        waits: set[asyncio.Future[Any]] = set(pending)
        for attempt in attempts:
            if attempt.future.done():
                continue
            if attempt.started_at is None:
                waits.add(attempt.start_signal())
            else:
                due = min(due, attempt.started_at + inline_wait)
        if due <= now:
            return
        await asyncio.wait(waits, timeout=due - now, return_when=FIRST_COMPLETED)
        pending = {attempt.future for attempt in attempts if not attempt.future.done()}
