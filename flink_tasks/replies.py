"""Turning a `Reply` from the pipeline function into a value or the right exception."""

from __future__ import annotations

from typing import Any

from flink_tasks import errors, serialization
from flink_tasks._proto import messages_pb2
from flink_tasks.types import PipelineStatus


def error_of(reply: messages_pb2.Reply, *, allow_pickle: bool = False) -> Exception:
    """The exception a failed reply stands for."""
    exc = serialization.decode_exception(reply.error, allow_pickle=allow_pickle)
    if exc.exception_type == errors.NOT_FOUND_ERROR:
        return errors.PipelineNotFoundError(exc.exception_message)
    if exc.exception_type == errors.ACTION_ERROR:
        return errors.ActionError(exc.exception_message)
    return errors.TaskError.from_exception(exc)


def result_of(reply: messages_pb2.Reply, *, allow_pickle: bool = False) -> Any:
    """A pipeline's result, or raise its `TaskError`."""
    outcome = reply.WhichOneof("outcome")
    if outcome == "error":
        raise error_of(reply, allow_pickle=allow_pickle)
    if outcome == "result":
        return serialization.decode(reply.result, allow_pickle=allow_pickle)
    raise errors.FlinkTasksError(f"unexpected reply {outcome!r} for pipeline {reply.pipeline_id!r}")


def status_of(reply: messages_pb2.Reply) -> PipelineStatus:
    """An action's resulting status, or raise its error."""
    outcome = reply.WhichOneof("outcome")
    if outcome == "error":
        raise error_of(reply)
    if outcome != "status":
        raise errors.FlinkTasksError(
            f"unexpected reply {outcome!r} to an action on {reply.pipeline_id!r}"
        )
    return PipelineStatus(reply.status)


def request_of(reply: messages_pb2.Reply) -> messages_pb2.PipelineRequest:
    """The stored request, or raise its error."""
    outcome = reply.WhichOneof("outcome")
    if outcome == "error":
        raise error_of(reply)
    return reply.request
