"""How the client reads a reply: a pipeline's outcome, an action's outcome, a task's error."""

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
from flink_tasks.types import PipelineStatus
from flink_tasks_client.settings import ClientSettings

_STATUS_ACTIONS = {
    messages_pb2.ACTION_GET_STATUS: "get_status",
    messages_pb2.ACTION_PAUSE: "pause",
    messages_pb2.ACTION_UNPAUSE: "unpause",
    messages_pb2.ACTION_CANCEL: "cancel",
}


class ReplyDecoding:
    """Turns `Reply` messages into results or exceptions, under the client's settings."""

    _settings: ClientSettings

    @property
    def allow_pickle(self) -> bool:
        """Whether pickled results are accepted (see `ClientSettings.allow_pickle`)."""
        return self._settings.allow_pickle

    def _pipeline_outcome(self, reply: messages_pb2.Reply) -> Any:
        kind = reply.WhichOneof("outcome")
        if kind == "error":
            raise self._task_error(reply.error)
        if kind == "result" or kind is None:
            return serialization.decode(reply.result, allow_pickle=self.allow_pickle)
        raise ClientError(
            f"unexpected reply for pipeline {reply.pipeline_id!r}: {kind} instead of a result"
        )

    def _action_outcome(self, action: int, reply: messages_pb2.Reply) -> Any:
        kind = reply.WhichOneof("outcome")
        if kind == "error":
            error = reply.error
            if error.exception_type == NOT_FOUND_ERROR:
                raise PipelineNotFoundError(error.exception_message)
            if error.exception_type == ACTION_ERROR:
                raise ActionError(error.exception_message)
            raise self._task_error(error)
        if action in _STATUS_ACTIONS and kind == "status":
            try:
                return PipelineStatus(reply.status)
            except ValueError as err:
                raise ClientError(
                    f"unknown pipeline status {reply.status} in the reply; upgrade the client"
                ) from err
        if action == messages_pb2.ACTION_GET_REQUEST and kind == "request":
            request = messages_pb2.PipelineRequest()
            request.CopyFrom(reply.request)
            return request
        if action == messages_pb2.ACTION_GET_RESULT and kind in ("result", None):
            return serialization.decode(reply.result, allow_pickle=self.allow_pickle)
        raise ClientError(
            f"unexpected reply to {messages_pb2.Action.Name(action)} of pipeline "  # type: ignore[arg-type]
            f"{reply.pipeline_id!r}: {kind}"
        )

    def _task_error(self, error: values_pb2.TaskException) -> TaskError:
        exception = serialization.decode_exception(error, allow_pickle=self.allow_pickle)
        return TaskError.from_exception(exception)
