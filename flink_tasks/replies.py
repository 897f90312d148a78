"""What every front-end receives: one decoder of `Reply` messages, shared by the Kafka client,
the in-process client and `PipelineEnvironment`, so that the same outcome gives the same value
or the same exception wherever a pipeline runs.

- A pipeline's reply: its result; a failure raises `TaskError` (`PipelineCancelledError` for a
  cancelled pipeline). A reply without an outcome (only an older engine sends one) is ``None``.
- An action's reply: the `PipelineStatus` it asked for or caused (`get_status`, `pause`,
  `unpause`, `cancel`), the `SubmittedPipeline` (`get_request`), or the result (`get_result`).
  An unknown pipeline raises `PipelineNotFoundError`, a refused action `ActionError`, any other
  error `TaskError`.
- A reply of a kind the caller did not ask for raises `ClientError` (an engine newer than this
  library); nothing is silently read as something else.
"""

from __future__ import annotations

from typing import Any

from flink_tasks import serialization
from flink_tasks._proto import messages_pb2, values_pb2
from flink_tasks.errors import (
    ACTION_ERROR,
    NOT_FOUND_ERROR,
    ActionError,
    ClientError,
    PipelineNotFoundError,
    TaskError,
)
from flink_tasks.records import SubmittedPipeline, submitted_pipeline
from flink_tasks.types import PipelineStatus

STATUS_ACTIONS = {
    messages_pb2.ACTION_GET_STATUS: "get_status",
    messages_pb2.ACTION_PAUSE: "pause",
    messages_pb2.ACTION_UNPAUSE: "unpause",
    messages_pb2.ACTION_CANCEL: "cancel",
}


def task_error(error: values_pb2.TaskException, *, allow_pickle: bool = False) -> TaskError:
    """The `TaskError` (or subclass, e.g. `PipelineCancelledError`) a reply's error stands for."""
    exception = serialization.decode_exception(error, allow_pickle=allow_pickle)
    return TaskError.from_exception(exception)


def pipeline_outcome(reply: messages_pb2.Reply, *, allow_pickle: bool = False) -> Any:
    """A pipeline's result from its final reply, or raise its `TaskError`."""
    kind = reply.WhichOneof("outcome")
    if kind == "error":
        raise task_error(reply.error, allow_pickle=allow_pickle)
    if kind == "result" or kind is None:
        return serialization.decode(reply.result, allow_pickle=allow_pickle)
    raise ClientError(
        f"unexpected reply for pipeline {reply.pipeline_id!r}: {kind} instead of a result"
    )


def action_outcome(action: int, reply: messages_pb2.Reply, *, allow_pickle: bool = False) -> Any:
    """What the reply to ``action`` means: a status, the submitted pipeline or a result."""
    kind = reply.WhichOneof("outcome")
    if kind == "error":
        error = reply.error
        if error.exception_type == NOT_FOUND_ERROR:
            raise PipelineNotFoundError(error.exception_message)
        if error.exception_type == ACTION_ERROR:
            raise ActionError(error.exception_message)
        raise task_error(error, allow_pickle=allow_pickle)
    if action in STATUS_ACTIONS and kind == "status":
        try:
            return PipelineStatus(reply.status)
        except ValueError as err:
            raise ClientError(
                f"unknown pipeline status {reply.status} in the reply; upgrade the client"
            ) from err
    if action == messages_pb2.ACTION_GET_REQUEST and kind == "request":
        return request_outcome(reply, allow_pickle=allow_pickle)
    if action == messages_pb2.ACTION_GET_RESULT and kind in ("result", None):
        return serialization.decode(reply.result, allow_pickle=allow_pickle)
    raise ClientError(
        f"unexpected reply to {messages_pb2.Action.Name(action)} of pipeline "  # type: ignore[arg-type]
        f"{reply.pipeline_id!r}: {kind}"
    )


def request_outcome(reply: messages_pb2.Reply, *, allow_pickle: bool = False) -> SubmittedPipeline:
    """The stored request of a ``get_request`` reply, as the project's own type."""
    return submitted_pipeline(reply.request, allow_pickle=allow_pickle)
