"""Run one task for a `TaskRequest` and return its `TaskResult`, wherever the body runs.

The same two functions run a task in a process-pool child (`execute_sync`), in a thread of the
thread pool (`execute_sync`) and on the task event loop (`execute_async`): decode the arguments,
call the body, encode the result. They never raise for a task problem; the caller only enforces
the timeout (and, for the process pool, notices a child that died).
"""

from __future__ import annotations

import asyncio
import inspect
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from flink_tasks import serialization
from flink_tasks._proto import messages_pb2, values_pb2
from flink_tasks.context import TaskContext
from flink_tasks.errors import NonRetryableError, SerializationError, TaskExpiredError
from flink_tasks.logs import task_fields
from flink_tasks.pipeline.builder import PipelineBuilder
from flink_tasks.registry import FlinkTasks, TaskDefinition
from flink_tasks.worker import hooks

# A group aggregates up to 100 results at one address, and StateFun ships an address's state with
# each call (32 MiB at most): 256 KiB per result keeps a full group well inside that.
DEFAULT_MAX_RESULT_BYTES = 256 * 1024
MAX_PIPELINE_RESULT_BYTES = 16 * 1024 * 1024


class TaskTimeoutError(TimeoutError):
    """A task ran longer than its timeout."""


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


def new_result(request: messages_pb2.TaskRequest) -> messages_pb2.TaskResult:
    """An empty result addressed like `request`."""
    return messages_pb2.TaskResult(
        task_id=request.task_id,
        attempt=request.attempt or 1,
        invocation=request.invocation,
        slot=request.slot,
    )


def failure_result(
    request: messages_pb2.TaskRequest, exc: BaseException
) -> messages_pb2.TaskResult:
    """The `TaskResult` of a failed attempt; `retryable` follows the request's retry policy."""
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
    result = new_result(request)
    result.error.CopyFrom(failure)
    return result


def prepare_args(
    definition: TaskDefinition, request: messages_pb2.TaskRequest
) -> tuple[list[Any], dict[str, Any]]:
    """The body's positional and keyword arguments (context and state first, if bound so)."""
    allow_pickle = definition.options.allow_pickle
    args = serialization.decode_args(request.args, allow_pickle=allow_pickle)
    kwargs = serialization.decode_kwargs(request.kwargs, allow_pickle=allow_pickle)
    if definition.with_state:
        state = (
            serialization.decode(request.state, allow_pickle=allow_pickle)
            if request.has_state
            else None
        )
        args.insert(0, state)
    if definition.with_context:
        args.insert(0, task_context(request))
    return args, kwargs


def task_context(request: messages_pb2.TaskRequest) -> TaskContext:
    """The `TaskContext` of the attempt `request`."""
    return TaskContext.create(
        task_id=request.task_id,
        task_type=request.task_type,
        pipeline_id=request.pipeline_id,
        root_pipeline_id=request.root_pipeline_id,
        attempt=request.attempt or 1,
    )


def _log_fields(request: messages_pb2.TaskRequest) -> Any:
    return task_fields(
        pipeline_id=request.pipeline_id,
        root_pipeline_id=request.root_pipeline_id,
        task_id=request.task_id,
        task_type=request.task_type,
        attempt=request.attempt or 1,
    )


def build_result(
    definition: TaskDefinition,
    request: messages_pb2.TaskRequest,
    output: Any,
    max_result_bytes: int,
) -> messages_pb2.TaskResult:
    """Encode the body's output; raises `SerializationError` / `TypeError` for a bad one."""
    result = new_result(request)
    allow_pickle = definition.options.allow_pickle
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
    limit = MAX_PIPELINE_RESULT_BYTES if result.HasField("pipeline") else max_result_bytes
    if result.ByteSize() > limit:
        raise SerializationError(
            f"the result of {request.task_type!r} is {result.ByteSize()} bytes, above the "
            f"{limit}-byte limit; pass large data by reference"
        )
    return result


def expired_result(request: messages_pb2.TaskRequest) -> messages_pb2.TaskResult | None:
    """The failure of a task that reached its worker after it expired (`.set(expires=)`)."""
    if not request.expires_at_ms:
        return None
    late_ms = int(time.time() * 1000) - request.expires_at_ms
    if late_ms <= 0:
        return None
    return failure_result(
        request,
        TaskExpiredError(
            f"task {request.task_type!r} ({request.task_id}) could not start before it "
            f"expired ({late_ms} ms late)"
        ),
    )


def note_context_requests(
    definition: TaskDefinition, args: list[Any], result: messages_pb2.TaskResult
) -> messages_pb2.TaskResult:
    """Carry what the task asked of its pipeline through its context (a pause) in `result`."""
    if definition.with_context and args and isinstance(args[0], TaskContext):
        result.pause_pipeline = args[0].pause_requested
    return result


def execute_sync(
    tasks: FlinkTasks,
    request: messages_pb2.TaskRequest,
    max_result_bytes: int,
    middleware: Sequence[hooks.SyncMiddleware] = (),
) -> messages_pb2.TaskResult:
    """Run a sync task body here (a pool child or a pool thread), inside `middleware`; never
    raises. Records logged meanwhile in this thread carry the task's ids."""
    expired = expired_result(request)
    if expired is not None:
        return expired
    with _log_fields(request):
        try:
            definition = tasks.get(request.task_type)
            args, kwargs = prepare_args(definition, request)
            if middleware:
                output = hooks.call_sync(
                    middleware,
                    task_context(request),
                    lambda: call_sync(definition.fn, args, kwargs),
                )
            else:
                output = call_sync(definition.fn, args, kwargs)
            result = build_result(definition, request, output, max_result_bytes)
            return note_context_requests(definition, args, result)
        except BaseException as exc:  # SystemExit from a body is the body's failure, not ours
            return failure_result(request, exc)


async def execute_async(
    tasks: FlinkTasks,
    request: messages_pb2.TaskRequest,
    max_result_bytes: int,
    middleware: Sequence[hooks.AsyncMiddleware] = (),
) -> messages_pb2.TaskResult:
    """Run an async task body on the running loop, inside `middleware`; raises only
    `CancelledError` (a timeout). Records logged meanwhile in this task carry its ids."""
    expired = expired_result(request)
    if expired is not None:
        return expired
    with _log_fields(request):
        try:
            definition = tasks.get(request.task_type)
            args, kwargs = prepare_args(definition, request)

            async def body() -> Any:
                if inspect.isasyncgenfunction(definition.fn):
                    return [item async for item in definition.fn(*args, **kwargs)]
                return await definition.fn(*args, **kwargs)

            if middleware:
                output = await hooks.call_async(middleware, task_context(request), body)
            else:
                output = await body()
            result = build_result(definition, request, output, max_result_bytes)
            return note_context_requests(definition, args, result)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            return failure_result(request, exc)


def call_sync(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Call a sync body; a generator's items are collected into a list."""
    output = fn(*args, **kwargs)
    if inspect.isgenerator(output):
        return list(output)
    return output
