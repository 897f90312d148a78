"""`PipelineEnvironment`: run pipelines in-process (milliseconds) or on the real local runtime."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections import defaultdict
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from types import TracebackType
from typing import Any, Protocol, TypeVar

from flink_tasks import replies, requests, wire
from flink_tasks._proto import events_pb2, messages_pb2
from flink_tasks.engine import EngineSettings, system_clock
from flink_tasks.errors import ResultTimeoutError
from flink_tasks.pipeline.builder import PipelineBuilder
from flink_tasks.records import PipelineEvent, SubmittedPipeline, pipeline_event
from flink_tasks.registry import FlinkTasks
from flink_tasks.testing._inprocess import InMemoryReportSink, InMemoryRuntime
from flink_tasks.testing.virtual_time import RunningTasks, VirtualClock
from flink_tasks.types import PipelineStatus
from flink_tasks.worker.functions import (
    DEFAULT_BATCH_WAIT,
    DEFAULT_INLINE_WAIT,
    DEFAULT_LEASE,
    DEFAULT_QUEUE_WAIT,
    Worker,
)
from flink_tasks.worker.task_runner import PoolSettings, WorkerHooks

T = TypeVar("T")

_REPLY_TOPIC = "in-process.replies"
_EVENTS_TOPIC = "in-process.events"


class PipelineClient(Protocol):
    """What every environment and the Kafka client offer."""

    async def submit_async(
        self, pipeline: PipelineBuilder, timeout: timedelta | float | None = None
    ) -> Any: ...
    def submit(
        self, pipeline: PipelineBuilder, timeout: timedelta | float | None = None
    ) -> concurrent.futures.Future[Any]: ...
    async def get_status(self, pipeline_id: str) -> PipelineStatus: ...
    async def get_request(self, pipeline_id: str) -> SubmittedPipeline: ...
    async def get_result(self, pipeline_id: str) -> Any: ...
    async def pause(self, pipeline_id: str) -> PipelineStatus: ...
    async def unpause(self, pipeline_id: str) -> PipelineStatus: ...
    async def cancel(self, pipeline_id: str) -> PipelineStatus: ...


class KafkaPipelineClient(PipelineClient, Protocol):
    """A client over Kafka, as `start_local` uses it (`FlinkTasksClient`)."""

    async def wait_ready_async(self) -> None: ...
    async def aclose(self) -> None: ...


class InProcessClient:
    """A client of an `InMemoryRuntime`: same calls as `FlinkTasksClient`, no Kafka.

    Requests are checked and replies read by the same code as the Kafka client's
    (`flink_tasks.requests`, `flink_tasks.replies`): the same input is refused with the same
    exception, including ``max_request_bytes``, and the same outcome gives the same result.
    """

    def __init__(
        self,
        runtime: InMemoryRuntime,
        *,
        default_timeout: float = 60.0,
        allow_pickle: bool = False,
        max_request_bytes: int = requests.DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        self.runtime = runtime
        self.default_timeout = timedelta(seconds=default_timeout)
        self.allow_pickle = allow_pickle
        self.max_request_bytes = max_request_bytes
        self._pending: dict[str, asyncio.Future[messages_pb2.Reply]] = {}
        self.events: dict[str, list[PipelineEvent]] = defaultdict(list)
        self._loop: asyncio.AbstractEventLoop | None = None
        runtime.add_egress_listener(self._on_egress)
        runtime.on_failure(self._on_failure)

    @property
    def waiting(self) -> bool:
        """Whether a call waits for its reply."""
        return bool(self._pending)

    def _on_egress(self, topic: str, key: str, payload: bytes) -> None:
        if topic == _REPLY_TOPIC:
            reply = messages_pb2.Reply.FromString(payload)
            future = self._pending.pop(reply.reply_id, None)
            if future is not None and not future.done():
                future.set_result(reply)
        elif topic == _EVENTS_TOPIC:
            self.events[key].append(pipeline_event(events_pb2.PipelineEvent.FromString(payload)))

    def _on_failure(self, error: BaseException) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RuntimeError(f"the in-memory runtime failed: {error!r}"))
        self._pending.clear()

    async def _call(
        self, typename: str, pipeline_id: str, payload: bytes, reply_id: str, timeout: timedelta
    ) -> messages_pb2.Reply:
        self._loop = asyncio.get_running_loop()
        future: asyncio.Future[messages_pb2.Reply] = self._loop.create_future()
        self._pending[reply_id] = future
        self.runtime.route(wire.PIPELINE_FUNCTION, pipeline_id, typename, payload)
        try:
            return await asyncio.wait_for(future, timeout.total_seconds())
        except asyncio.TimeoutError:
            raise ResultTimeoutError(
                f"no reply for pipeline {pipeline_id!r} within {timeout}. It may still be running: "
                "ask get_status(...) or get_result(...) by pipeline id, or pass a longer timeout."
            ) from None
        finally:
            self._pending.pop(reply_id, None)

    async def submit_async(
        self, pipeline: PipelineBuilder, timeout: timedelta | float | None = None
    ) -> Any:
        """Run a pipeline and return its result (or raise its `TaskError`)."""
        limit = requests.check_timeout(timeout, self.default_timeout)
        reply_id = uuid.uuid4().hex
        payload = requests.encode_pipeline_request(
            pipeline,
            reply_topic=_REPLY_TOPIC,
            reply_id=reply_id,
            events_topic=_EVENTS_TOPIC,
            max_request_bytes=self.max_request_bytes,
        )
        reply = await self._call(wire.PIPELINE_REQUEST, pipeline.id, payload, reply_id, limit)
        return replies.pipeline_outcome(reply, allow_pickle=self.allow_pickle)

    def submit(
        self, pipeline: PipelineBuilder, timeout: timedelta | float | None = None
    ) -> concurrent.futures.Future[Any]:
        """Start a pipeline; the returned future completes with its result."""
        loop = self._loop or asyncio.get_event_loop()
        coroutine = self.submit_async(pipeline, timeout)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            out: concurrent.futures.Future[Any] = concurrent.futures.Future()
            task = loop.create_task(coroutine)
            task.add_done_callback(lambda t: _copy_outcome(t, out))
            return out
        return asyncio.run_coroutine_threadsafe(coroutine, loop)

    async def _action(
        self, pipeline_id: str, action: int, timeout: timedelta | float | None = None
    ) -> Any:
        limit = requests.check_timeout(timeout, self.default_timeout)
        reply_id = uuid.uuid4().hex
        payload = requests.encode_action_request(
            pipeline_id, action, reply_topic=_REPLY_TOPIC, reply_id=reply_id
        )
        reply = await self._call(wire.ACTION_REQUEST, pipeline_id, payload, reply_id, limit)
        return replies.action_outcome(action, reply, allow_pickle=self.allow_pickle)

    async def get_status(self, pipeline_id: str) -> PipelineStatus:
        """The pipeline's status (`PENDING` if unknown)."""
        status: PipelineStatus = await self._action(pipeline_id, messages_pb2.ACTION_GET_STATUS)
        return status

    async def get_request(self, pipeline_id: str) -> SubmittedPipeline:
        """The request the pipeline was submitted with."""
        request: SubmittedPipeline = await self._action(
            pipeline_id, messages_pb2.ACTION_GET_REQUEST
        )
        return request

    async def get_result(self, pipeline_id: str) -> Any:
        """A finished pipeline's result (or its `TaskError`)."""
        return await self._action(pipeline_id, messages_pb2.ACTION_GET_RESULT)

    async def pause(self, pipeline_id: str) -> PipelineStatus:
        """Stop new tasks from being sent."""
        status: PipelineStatus = await self._action(pipeline_id, messages_pb2.ACTION_PAUSE)
        return status

    async def unpause(self, pipeline_id: str) -> PipelineStatus:
        """Send what was held while paused."""
        status: PipelineStatus = await self._action(pipeline_id, messages_pb2.ACTION_UNPAUSE)
        return status

    async def cancel(self, pipeline_id: str) -> PipelineStatus:
        """Cancel: no new task starts; `finally_do` runs; the reply is a cancellation error."""
        status: PipelineStatus = await self._action(pipeline_id, messages_pb2.ACTION_CANCEL)
        return status


def _copy_outcome(task: asyncio.Task[Any], out: concurrent.futures.Future[Any]) -> None:
    if task.cancelled():
        out.cancel()
    elif (error := task.exception()) is not None:
        out.set_exception(error)
    else:
        out.set_result(task.result())


class PipelineEnvironment:
    """Somewhere to run pipelines: `in_process(tasks)` or `start_local(tasks)`.

    Use as `async with PipelineEnvironment.in_process(tasks) as env: await env.submit_async(p)`.
    """

    def __init__(
        self,
        client: PipelineClient,
        *,
        worker: Worker | None = None,
        runtime: InMemoryRuntime | None = None,
    ) -> None:
        self.client = client
        self.worker = worker
        self.runtime = runtime
        self._closers: list[Any] = []

    async def sleep(self, duration: timedelta) -> None:
        """Let ``duration`` pass: on virtual time at once (the delayed messages due meanwhile
        are delivered and handled, in order), otherwise for real."""
        clock, runtime = self.clock, self.runtime
        if clock is None or runtime is None:
            await asyncio.sleep(duration.total_seconds())
            return
        target = clock.now_ms + int(duration.total_seconds() * 1000)
        await runtime.settled()
        while clock.next_due is not None and clock.next_due <= target:
            clock.advance()
            await runtime.settled()
        clock.now_ms = max(clock.now_ms, target)

    @property
    def clock(self) -> VirtualClock | None:
        """The virtual clock of an in-process environment with ``virtual_time=True``."""
        return self.runtime.clock if self.runtime is not None else None

    @classmethod
    def in_process(
        cls,
        tasks: FlinkTasks,
        *,
        engine: EngineSettings | None = None,
        hooks: list[WorkerHooks] | None = None,
        max_batch: int = 1000,
        default_timeout: float = 60.0,
        inline_wait: timedelta = DEFAULT_INLINE_WAIT,
        batch_wait: timedelta = DEFAULT_BATCH_WAIT,
        queue_wait: timedelta = DEFAULT_QUEUE_WAIT,
        lease: timedelta = DEFAULT_LEASE,
        pool: PoolSettings | None = None,
        virtual_time: bool = False,
        max_request_bytes: int = requests.DEFAULT_MAX_REQUEST_BYTES,
    ) -> PipelineEnvironment:
        """The same pipeline function and task functions, routed in memory by StateFun's rules.

        Tasks running longer than `inline_wait` (or queued for a `pool` slot longer than
        `queue_wait`) report through an in-memory task-reports topic, with heartbeats under
        `lease`, as on the real runtime. `pool`: where sync bodies run (default: threads).

        With ``virtual_time=True`` delayed messages (retry back-offs, deadlines, retention) run
        on a `VirtualClock` that jumps to the next one as soon as no message is in flight, no
        task body runs and a call waits for its reply: a 30 s back-off takes milliseconds. Task
        bodies still take their real time. ``env.clock`` is that clock (None otherwise)."""
        reports = InMemoryReportSink()
        clock = VirtualClock() if virtual_time else None
        running = RunningTasks(lambda: runtime.schedule_advance())
        # engine None: the Worker's default, with the environment's settings as `serve` reads them
        worker = Worker(
            tasks,
            engine=engine,
            hooks=[*(hooks or ()), running] if clock is not None else hooks or (),
            reports=reports,
            inline_wait=inline_wait,
            batch_wait=batch_wait,
            queue_wait=queue_wait,
            lease=lease,
            pool=pool,
            clock=clock if clock is not None else system_clock,
        )
        runtime = InMemoryRuntime(worker.handle, max_batch=max_batch, clock=clock)
        reports.runtime = runtime
        client = InProcessClient(
            runtime, default_timeout=default_timeout, max_request_bytes=max_request_bytes
        )
        runtime.busy = lambda: running.count > 0
        runtime.waiting = lambda: client.waiting
        env = cls(client, worker=worker, runtime=runtime)
        env._closers.append(runtime.close)
        return env

    @classmethod
    def start_local(
        cls, tasks: FlinkTasks, **options: Any
    ) -> AbstractAsyncContextManager[PipelineEnvironment]:
        """The real runtime: Kafka + StateFun started (or reused) locally, `tasks` served here.

        Options: `settings` (a `LocalRuntimeSettings`), `engine`, `default_timeout`,
        `keep_running` (leave Kafka and StateFun up on exit, for the next run to reuse),
        `client` (the Kafka client's factory, e.g. `FlinkTasksClient`; default: the one the
        installed flink-tasks-client distribution declares); `pool`
        (a `PoolSettings`; default: sync tasks in a thread pool of this process;
        ``PoolSettings(kind="process")`` runs them in child processes, which import `tasks` by
        its module path: the script that starts them needs ``if __name__ == "__main__":``).
        """
        from flink_tasks.testing._local import start_local

        return start_local(cls, tasks, **options)

    def events(self, pipeline_id: str) -> list[PipelineEvent]:
        """Events emitted so far for a root pipeline (in-process environments)."""
        events = getattr(self.client, "events", None)
        if not isinstance(events, dict):
            raise TypeError("this environment does not record events; use client.events(...)")
        return list(events.get(pipeline_id, []))

    async def submit_async(
        self, pipeline: PipelineBuilder[T], timeout: timedelta | float | None = None
    ) -> T:
        """Run a pipeline and return its result (or raise its `TaskError`)."""
        result: T = await self.client.submit_async(pipeline, timeout)
        return result

    def submit(
        self, pipeline: PipelineBuilder[T], timeout: timedelta | float | None = None
    ) -> concurrent.futures.Future[T]:
        """Start a pipeline; the future completes with its result."""
        return self.client.submit(pipeline, timeout)

    async def get_status(self, pipeline_id: str) -> PipelineStatus:
        """The pipeline's status."""
        return await self.client.get_status(pipeline_id)

    async def get_request(self, pipeline_id: str) -> SubmittedPipeline:
        """The stored request."""
        return await self.client.get_request(pipeline_id)

    async def get_result(self, pipeline_id: str) -> Any:
        """The stored result."""
        return await self.client.get_result(pipeline_id)

    async def pause(self, pipeline_id: str) -> PipelineStatus:
        """Pause a pipeline."""
        return await self.client.pause(pipeline_id)

    async def unpause(self, pipeline_id: str) -> PipelineStatus:
        """Unpause a pipeline."""
        return await self.client.unpause(pipeline_id)

    async def cancel(self, pipeline_id: str) -> PipelineStatus:
        """Cancel a pipeline."""
        return await self.client.cancel(pipeline_id)

    async def __aenter__(self) -> PipelineEnvironment:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop what this environment started."""
        while self._closers:
            closer = self._closers.pop()
            result = closer()
            if asyncio.iscoroutine(result):
                await result
