"""`PipelineEnvironment`: run pipelines in-process (milliseconds) or on the real local runtime."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections import defaultdict
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

from flink_tasks import replies, wire
from flink_tasks._proto import events_pb2, messages_pb2
from flink_tasks.engine import EngineSettings
from flink_tasks.errors import PipelineDefinitionError, ResultTimeoutError
from flink_tasks.pipeline.builder import PipelineBuilder, pipeline_id_problem
from flink_tasks.registry import FlinkTasks
from flink_tasks.testing._inprocess import InMemoryReportSink, InMemoryRuntime
from flink_tasks.types import PipelineStatus
from flink_tasks.worker.functions import DEFAULT_INLINE_WAIT, DEFAULT_LEASE, Worker
from flink_tasks.worker.task_runner import WorkerHooks

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
    async def get_request(self, pipeline_id: str) -> messages_pb2.PipelineRequest: ...
    async def get_result(self, pipeline_id: str) -> Any: ...
    async def pause(self, pipeline_id: str) -> PipelineStatus: ...
    async def unpause(self, pipeline_id: str) -> PipelineStatus: ...
    async def cancel(self, pipeline_id: str) -> PipelineStatus: ...


class KafkaPipelineClient(PipelineClient, Protocol):
    """A client over Kafka, as `start_local` uses it (`FlinkTasksClient`)."""

    async def wait_ready_async(self) -> None: ...
    async def aclose(self) -> None: ...


def _seconds(timeout: timedelta | float | None, default: float) -> float:
    if timeout is None:
        return default
    if isinstance(timeout, timedelta):
        return timeout.total_seconds()
    return float(timeout)


class InProcessClient:
    """A client of an `InMemoryRuntime`: same calls as `FlinkTasksClient`, no Kafka."""

    def __init__(
        self, runtime: InMemoryRuntime, *, default_timeout: float = 60.0, allow_pickle: bool = False
    ) -> None:
        self.runtime = runtime
        self.default_timeout = default_timeout
        self.allow_pickle = allow_pickle
        self._pending: dict[str, asyncio.Future[messages_pb2.Reply]] = {}
        self.events: dict[str, list[events_pb2.PipelineEvent]] = defaultdict(list)
        self._loop: asyncio.AbstractEventLoop | None = None
        runtime.add_egress_listener(self._on_egress)
        runtime.on_failure(self._on_failure)

    def _on_egress(self, topic: str, key: str, payload: bytes) -> None:
        if topic == _REPLY_TOPIC:
            reply = messages_pb2.Reply.FromString(payload)
            future = self._pending.pop(reply.reply_id, None)
            if future is not None and not future.done():
                future.set_result(reply)
        elif topic == _EVENTS_TOPIC:
            self.events[key].append(events_pb2.PipelineEvent.FromString(payload))

    def _on_failure(self, error: BaseException) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RuntimeError(f"the in-memory runtime failed: {error!r}"))
        self._pending.clear()

    async def _call(
        self, typename: str, pipeline_id: str, payload: bytes, reply_id: str, timeout: float
    ) -> messages_pb2.Reply:
        self._loop = asyncio.get_running_loop()
        future: asyncio.Future[messages_pb2.Reply] = self._loop.create_future()
        self._pending[reply_id] = future
        self.runtime.route(wire.PIPELINE_FUNCTION, pipeline_id, typename, payload)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise ResultTimeoutError(
                f"no reply for pipeline {pipeline_id!r} within {timeout:g} s"
            ) from None
        finally:
            self._pending.pop(reply_id, None)

    async def submit_async(
        self, pipeline: PipelineBuilder, timeout: timedelta | float | None = None
    ) -> Any:
        """Run a pipeline and return its result (or raise its `TaskError`)."""
        id_problem = pipeline_id_problem(pipeline.id)
        if id_problem is not None:
            raise PipelineDefinitionError(f"{id_problem}: {pipeline!r}")
        reply_id = uuid.uuid4().hex
        request = messages_pb2.PipelineRequest(
            pipeline=pipeline.to_proto(),
            reply_topic=_REPLY_TOPIC,
            reply_id=reply_id,
            events_topic=_EVENTS_TOPIC,
        )
        reply = await self._call(
            wire.PIPELINE_REQUEST,
            pipeline.id,
            request.SerializeToString(),
            reply_id,
            _seconds(timeout, self.default_timeout),
        )
        return replies.result_of(reply, allow_pickle=self.allow_pickle)

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
    ) -> messages_pb2.Reply:
        reply_id = uuid.uuid4().hex
        request = messages_pb2.ActionRequest(
            pipeline_id=pipeline_id,
            action=cast("messages_pb2.Action.ValueType", action),
            reply_topic=_REPLY_TOPIC,
            reply_id=reply_id,
        )
        return await self._call(
            wire.ACTION_REQUEST,
            pipeline_id,
            request.SerializeToString(),
            reply_id,
            _seconds(timeout, self.default_timeout),
        )

    async def get_status(self, pipeline_id: str) -> PipelineStatus:
        """The pipeline's status (`PENDING` if unknown)."""
        return replies.status_of(await self._action(pipeline_id, messages_pb2.ACTION_GET_STATUS))

    async def get_request(self, pipeline_id: str) -> messages_pb2.PipelineRequest:
        """The request the pipeline was submitted with."""
        return replies.request_of(await self._action(pipeline_id, messages_pb2.ACTION_GET_REQUEST))

    async def get_result(self, pipeline_id: str) -> Any:
        """A finished pipeline's result (or its `TaskError`)."""
        return replies.result_of(
            await self._action(pipeline_id, messages_pb2.ACTION_GET_RESULT),
            allow_pickle=self.allow_pickle,
        )

    async def pause(self, pipeline_id: str) -> PipelineStatus:
        """Stop new tasks from being sent."""
        return replies.status_of(await self._action(pipeline_id, messages_pb2.ACTION_PAUSE))

    async def unpause(self, pipeline_id: str) -> PipelineStatus:
        """Send what was held while paused."""
        return replies.status_of(await self._action(pipeline_id, messages_pb2.ACTION_UNPAUSE))

    async def cancel(self, pipeline_id: str) -> PipelineStatus:
        """Cancel: no new task starts; `finally_do` runs; the reply is a cancellation error."""
        return replies.status_of(await self._action(pipeline_id, messages_pb2.ACTION_CANCEL))


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
        lease: timedelta = DEFAULT_LEASE,
    ) -> PipelineEnvironment:
        """The same pipeline function and task functions, routed in memory by StateFun's rules.

        Tasks running longer than `inline_wait` report through an in-memory task-reports
        topic, with heartbeats under `lease`, as on the real runtime."""
        reports = InMemoryReportSink()
        worker = Worker(
            tasks,
            engine=engine,
            hooks=hooks or (),
            reports=reports,
            inline_wait=inline_wait,
            lease=lease,
        )
        runtime = InMemoryRuntime(worker.handle, max_batch=max_batch)
        reports.runtime = runtime
        client = InProcessClient(runtime, default_timeout=default_timeout)
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

    def events(self, pipeline_id: str) -> list[events_pb2.PipelineEvent]:
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

    async def get_request(self, pipeline_id: str) -> messages_pb2.PipelineRequest:
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
