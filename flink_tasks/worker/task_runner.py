"""Runs one bound task for a `TaskRequest` and turns whatever happens into a `TaskResult`.

Where a body runs (see `PoolSettings` and docs/reliability.md, "Task isolation"):

- **sync** bodies in a process pool (`pool.ProcessPool`, the Celery prefork model: a crash,
  segfault, hang or memory blow-up costs one child process) or in a thread pool (cheaper, but a
  hung thread is never freed and a crash takes the worker process with it);
- **async** bodies on the task event loop (`task_loop.TaskLoop`), a loop in a thread of its own,
  so that a body that blocks its loop never stops the endpoint from answering StateFun.

Every failure (unknown task, bad arguments, exception, timeout, a lost child, memory over the
limit, unserializable result) becomes a `TaskException` in the result: a task problem never
becomes an HTTP error that StateFun would retry and eventually fail the Flink job over.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from flink_tasks._proto import messages_pb2
from flink_tasks.errors import WorkerLostError
from flink_tasks.registry import FlinkTasks, TaskDefinition
from flink_tasks.tracing import TaskTracer, tracing_from_env
from flink_tasks.worker.execute import (
    DEFAULT_MAX_RESULT_BYTES,
    MAX_PIPELINE_RESULT_BYTES,
    TaskTimeoutError,
    exception_type_name,
    execute_async,
    execute_sync,
    failure_result,
)
from flink_tasks.worker.hooks import async_middleware, module_attribute_of, sync_middleware
from flink_tasks.worker.metrics import Metrics
from flink_tasks.worker.pool import ProcessPool, registry_target
from flink_tasks.worker.task_loop import TaskLoop

__all__ = [
    "DEFAULT_MAX_RESULT_BYTES",
    "MAX_PIPELINE_RESULT_BYTES",
    "PoolSettings",
    "TaskRunner",
    "TaskTimeoutError",
    "WorkerHooks",
    "exception_type_name",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolSettings:
    """Where sync task bodies run.

    Args:
        kind: ``"process"``: a pool of child processes, one task at a time each (isolation:
            crashes, hangs and memory limits cost one child); ``"thread"``: a thread pool in the
            worker process (no isolation; what `PipelineEnvironment` uses by default).
        size: children (process) or threads; default: the CPU count for processes, Python's
            default executor size (min(32, CPUs + 4)) for threads.
        max_memory: default per-task memory limit in bytes (process pool only);
            ``@tasks.bind(max_memory=...)`` overrides it per task.
        registry: ``MODULE:ATTR`` the children import; default: found from the registry object.
        hooks: ``MODULE:ATTR`` of the hooks whose ``around_sync`` the children run around sync
            bodies; default: found from the hook objects given to the runner.
    """

    kind: Literal["process", "thread"] = "thread"
    size: int | None = None
    max_memory: int | None = None
    registry: str | None = None
    hooks: tuple[str, ...] | None = None


class WorkerHooks(Protocol):
    """Observer hooks (worker process, endpoint loop); implement any subset. An exception in one
    is logged, never raised. Hooks may also be middleware: see `flink_tasks.worker.hooks`."""

    def task_received(self, request: messages_pb2.TaskRequest) -> None: ...
    def task_started(self, request: messages_pb2.TaskRequest) -> None: ...
    def task_finished(
        self, request: messages_pb2.TaskRequest, result: messages_pb2.TaskResult
    ) -> None: ...
    def task_retried(self, request: messages_pb2.TaskRequest) -> None: ...


class TaskRunner:
    """Runs tasks of one `FlinkTasks` registry."""

    def __init__(
        self,
        tasks: FlinkTasks,
        *,
        executor: concurrent.futures.Executor | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        hooks: Sequence[object] = (),
        pool: PoolSettings | None = None,
        metrics: Metrics | None = None,
        tracing: bool | None = None,
    ) -> None:
        self.tasks = tasks
        # None: FLINK_TASKS_TRACING decides; OpenTelemetry is imported only when tracing is on
        traced = tracing_from_env() if tracing is None else tracing
        self.tracer = TaskTracer() if traced else None
        self.max_result_bytes = max_result_bytes
        self.hooks: list[object] = list(hooks)
        self.sync_middleware = sync_middleware(self.hooks)
        self.async_middleware = async_middleware(self.hooks)
        self.pool_settings = pool or PoolSettings()
        self.metrics = metrics or Metrics()
        self._executor = executor
        if executor is None and self.pool_settings.kind == "thread" and self.pool_settings.size:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self.pool_settings.size, thread_name_prefix="flink-tasks-task"
            )
        self.process_pool: ProcessPool | None = None
        if self.pool_settings.kind == "process":
            self.process_pool = ProcessPool(
                self.pool_settings.registry or registry_target(tasks),
                size=self.pool_settings.size or os.cpu_count() or 1,
                max_result_bytes=max_result_bytes,
                on_lost=lambda reason: self.metrics.pool_children_lost.labels(reason).inc(),
                hook_targets=self._hook_targets(),
            )
        self.task_loop = TaskLoop(on_replaced=self.metrics.task_loops_replaced.inc)

    def _hook_targets(self) -> tuple[str, ...]:
        if self.pool_settings.hooks is not None:
            return self.pool_settings.hooks
        targets = []
        for hook in self.sync_middleware:
            target = module_attribute_of(hook)
            if target is None:
                raise ValueError(
                    f"process-pool children import middleware by MODULE:ATTR, and the hook "
                    f"{hook!r} is not a module-level variable of an importable module; define it "
                    "at module level or pass PoolSettings(hooks=('MODULE:ATTR', ...))"
                )
            targets.append(target)
        return tuple(targets)

    async def start(self) -> None:
        """Start the process pool now (else on the first task); raises if it cannot start."""
        if self.process_pool is not None:
            await self.process_pool.start()

    async def aclose(self) -> None:
        """Stop the pool's children and the task loop; idempotent."""
        if self.process_pool is not None:
            await self.process_pool.aclose()
        self.task_loop.close()
        if self._executor is not None and self.pool_settings.size:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(
        self, request: messages_pb2.TaskRequest, on_start: Callable[[], None] = lambda: None
    ) -> messages_pb2.TaskResult:
        """Run the requested task; never raises. `on_start` is called when its body starts
        (from a pool thread for the thread pool)."""
        if self.tracer is None:
            return await self._run(request, on_start)
        span = self.tracer.start(request)
        try:
            result = await self._run(request, on_start)
        except BaseException as exc:  # cancelled: the worker stops waiting for it
            self.tracer.abandon(span, type(exc).__name__)
            raise
        self.tracer.finish(span, result)
        return result

    async def _run(
        self, request: messages_pb2.TaskRequest, on_start: Callable[[], None]
    ) -> messages_pb2.TaskResult:
        self._hook("task_received", request)
        if request.attempt > 1:
            self._hook("task_retried", request)
        try:
            definition = self.tasks.get(request.task_type)
            timeout = request.timeout_s or self.tasks.default_timeout.total_seconds()
            self._hook("task_started", request)
            if definition.is_async:
                on_start()
                result = await self._run_async(request, timeout)
            elif self.process_pool is not None:
                result = await self._run_in_process(definition, request, timeout, on_start)
            else:
                result = await self._run_in_thread(request, timeout, on_start)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            result = failure_result(request, exc)
        if result.WhichOneof("outcome") == "error":
            logger.debug(
                "task %s (%s) failed: %s",
                request.task_id,
                request.task_type,
                result.error.exception_type,
            )
        self._hook("task_finished", request, result)
        return result

    async def _run_async(
        self, request: messages_pb2.TaskRequest, timeout: float
    ) -> messages_pb2.TaskResult:
        try:
            return await self.task_loop.run(
                lambda: execute_async(
                    self.tasks, request, self.max_result_bytes, self.async_middleware
                ),
                timeout,
            )
        except TimeoutError:
            raise _timeout(request, timeout) from None

    async def _run_in_thread(
        self, request: messages_pb2.TaskRequest, timeout: float, on_start: Callable[[], None]
    ) -> messages_pb2.TaskResult:
        loop = asyncio.get_running_loop()
        call = functools.partial(
            execute_sync, self.tasks, request, self.max_result_bytes, self.sync_middleware
        )

        def started_call() -> messages_pb2.TaskResult:
            on_start()
            return call()

        work = loop.run_in_executor(self._executor, started_call)
        done, _ = await asyncio.wait({work}, timeout=timeout)
        if not done:
            # a thread cannot be stopped: it stays busy until the body returns
            work.cancel()
            raise _timeout(request, timeout)
        return work.result()

    async def _run_in_process(
        self,
        definition: TaskDefinition,
        request: messages_pb2.TaskRequest,
        timeout: float,
        on_start: Callable[[], None],
    ) -> messages_pb2.TaskResult:
        assert self.process_pool is not None
        max_memory = definition.options.max_memory or self.pool_settings.max_memory
        try:
            data = await self.process_pool.run(
                request.SerializeToString(),
                task_type=request.task_type,
                timeout=timeout,
                max_memory=max_memory,
                on_start=on_start,
            )
        except (TaskTimeoutError, WorkerLostError) as exc:
            return failure_result(request, exc)
        return messages_pb2.TaskResult.FromString(data)

    def _hook(self, name: str, *args: Any) -> None:
        for hook in self.hooks:
            method = getattr(hook, name, None)
            if method is None:
                continue
            try:
                method(*args)
            except Exception:
                logger.exception("worker hook %s.%s failed", type(hook).__name__, name)


def _timeout(request: messages_pb2.TaskRequest, timeout: float) -> TaskTimeoutError:
    return TaskTimeoutError(f"task {request.task_type!r} did not finish within {timeout:g} s")
