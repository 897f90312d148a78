"""Runs one bound task for a `TaskRequest` and turns whatever happens into a `TaskResult`.

Sync functions run in a thread pool so they never block the event loop; async ones are awaited.
Every failure (unknown task, bad arguments, exception, timeout, unserializable result) becomes a
`TaskException` in the result: a task problem never becomes an HTTP error that StateFun would
retry and eventually fail the Flink job over.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from flink_tasks import serialization
from flink_tasks._proto import messages_pb2, values_pb2
from flink_tasks.context import TaskContext
from flink_tasks.errors import NonRetryableError, SerializationError
from flink_tasks.pipeline.builder import PipelineBuilder
from flink_tasks.registry import FlinkTasks, TaskDefinition

logger = logging.getLogger(__name__)


# A group aggregates up to 100 results at one address, and StateFun ships an address's state with
# each call (32 MiB at most): 256 KiB per result keeps a full group well inside that.
DEFAULT_MAX_RESULT_BYTES = 256 * 1024
MAX_PIPELINE_RESULT_BYTES = 16 * 1024 * 1024


class TaskTimeoutError(TimeoutError):
    """A task ran longer than its timeout."""


class WorkerHooks(Protocol):
    """In-process hooks; implement any subset. An exception in a hook is logged, never raised."""

    def task_received(self, request: messages_pb2.TaskRequest) -> None: ...
    def task_started(self, request: messages_pb2.TaskRequest) -> None: ...
    def task_finished(
        self, request: messages_pb2.TaskRequest, result: messages_pb2.TaskResult
    ) -> None: ...
    def task_retried(self, request: messages_pb2.TaskRequest) -> None: ...


def exception_type_name(exc: BaseException) -> str:
    """`module.Class`; flink-tasks' own errors as `flink_tasks.Class`."""
    cls = type(exc)
    if cls.__module__.startswith("flink_tasks"):
        return f"flink_tasks.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _type_names(exc: BaseException) -> set[str]:
    names = set()
    for cls in type(exc).__mro__:
        names.add(f"{cls.__module__}.{cls.__qualname__}")
        if cls.__module__ == "builtins":
            names.add(cls.__qualname__)
    return names


class TaskRunner:
    """Runs tasks of one `FlinkTasks` registry."""

    def __init__(
        self,
        tasks: FlinkTasks,
        *,
        executor: concurrent.futures.Executor | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        hooks: Sequence[WorkerHooks] = (),
    ) -> None:
        self.tasks = tasks
        self._executor = executor
        self.max_result_bytes = max_result_bytes
        self.hooks = list(hooks)

    async def run(self, request: messages_pb2.TaskRequest) -> messages_pb2.TaskResult:
        """Run the requested task; never raises."""
        self._hook("task_received", request)
        if request.attempt > 1:
            self._hook("task_retried", request)
        result = messages_pb2.TaskResult(
            task_id=request.task_id,
            attempt=request.attempt or 1,
            invocation=request.invocation,
            slot=request.slot,
        )
        definition: TaskDefinition | None = None
        try:
            definition = self.tasks.get(request.task_type)
            allow_pickle = definition.options.allow_pickle
            args = serialization.decode_args(request.args, allow_pickle=allow_pickle)
            kwargs = serialization.decode_kwargs(request.kwargs, allow_pickle=allow_pickle)
            state = (
                serialization.decode(request.state, allow_pickle=allow_pickle)
                if request.has_state
                else None
            )
            if definition.with_state:
                args.insert(0, state)
            if definition.with_context:
                args.insert(
                    0,
                    TaskContext.create(
                        task_id=request.task_id,
                        task_type=request.task_type,
                        pipeline_id=request.pipeline_id,
                        root_pipeline_id=request.root_pipeline_id,
                        attempt=request.attempt or 1,
                    ),
                )
            self._hook("task_started", request)
            timeout = request.timeout_s or self.tasks.default_timeout.total_seconds()
            output = await self._call(definition, args, kwargs, timeout)
            if definition.with_state:
                if not (isinstance(output, tuple) and len(output) == 2):
                    raise TypeError(
                        f"task {request.task_type!r} is bound with_state=True and must return "
                        f"(new_state, result), not {type(output).__name__}"
                    )
                new_state, output = output
                result.state.CopyFrom(serialization.encode(new_state, allow_pickle=allow_pickle))
                result.has_state = True
            if isinstance(output, PipelineBuilder):
                result.pipeline.CopyFrom(output.to_proto())
            elif request.not_fruitful:
                result.result.none = True
            else:
                try:
                    result.result.CopyFrom(serialization.encode(output, allow_pickle=allow_pickle))
                except SerializationError as err:
                    raise SerializationError(f"the result of {request.task_type!r}: {err}") from err
            # a returned pipeline is staged into bounded addresses, so only StateFun's limit applies
            limit = (
                MAX_PIPELINE_RESULT_BYTES if result.HasField("pipeline") else self.max_result_bytes
            )
            if result.ByteSize() > limit:
                raise SerializationError(
                    f"the result of {request.task_type!r} is {result.ByteSize()} bytes, above the "
                    f"{limit}-byte limit; pass large data by reference"
                )
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            result = self._failure(request, definition, exc)
        self._hook("task_finished", request, result)
        return result

    async def _call(
        self, definition: TaskDefinition, args: list[Any], kwargs: dict[str, Any], timeout: float
    ) -> Any:
        fn = definition.fn
        if inspect.isasyncgenfunction(fn):
            work: Any = _collect(fn(*args, **kwargs))
        elif definition.is_async:
            work = fn(*args, **kwargs)
        else:
            loop = asyncio.get_running_loop()
            call: Callable[[], Any] = functools.partial(_call_sync, fn, args, kwargs)
            work = loop.run_in_executor(self._executor, call)
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            raise TaskTimeoutError(
                f"task {definition.type_name!r} did not finish within {timeout:g} s"
            )
        return task.result()

    def _failure(
        self,
        request: messages_pb2.TaskRequest,
        definition: TaskDefinition | None,
        exc: BaseException,
    ) -> messages_pb2.TaskResult:
        failure = values_pb2.TaskException(
            id=request.task_id,
            type=request.task_type,
            exception_type=exception_type_name(exc),
            exception_message=str(exc),
            stacktrace="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            attempts=request.attempt or 1,
        )
        if request.has_state:
            failure.state.CopyFrom(request.state)
            failure.has_state = True
        if request.has_retry_policy and not isinstance(exc, NonRetryableError):
            retry_for = set(request.retry_policy.retry_for)
            failure.retryable = bool(retry_for & _type_names(exc))
        logger.debug(
            "task %s (%s) failed: %s", request.task_id, request.task_type, failure.exception_type
        )
        return messages_pb2.TaskResult(
            task_id=request.task_id,
            error=failure,
            attempt=request.attempt or 1,
            invocation=request.invocation,
            slot=request.slot,
        )

    def _hook(self, name: str, *args: Any) -> None:
        for hook in self.hooks:
            method = getattr(hook, name, None)
            if method is None:
                continue
            try:
                method(*args)
            except Exception:
                logger.exception("worker hook %s.%s failed", type(hook).__name__, name)


def _call_sync(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    output = fn(*args, **kwargs)
    if inspect.isgenerator(output):
        return list(output)
    return output


async def _collect(items: Any) -> list[Any]:
    return [item async for item in items]
