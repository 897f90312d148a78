"""The error tree of flink-tasks, and the task failure carried as data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

AGGREGATED_ERROR = "flink_tasks.AggregatedError"
CANCELLED_ERROR = "flink_tasks.PipelineCancelledError"
TASK_NOT_FOUND_ERROR = "flink_tasks.TaskNotFoundError"
TIMEOUT_ERROR = "flink_tasks.TaskTimeoutError"
SERIALIZATION_ERROR = "flink_tasks.SerializationError"
INVALID_REQUEST_ERROR = "flink_tasks.InvalidRequestError"
INTERNAL_ERROR = "flink_tasks.InternalError"
WORKER_LOST_ERROR = "flink_tasks.WorkerLostError"
MEMORY_LIMIT_ERROR = "flink_tasks.MemoryLimitError"
PIPELINE_DEADLINE_ERROR = "flink_tasks.PipelineDeadlineError"
TASK_EXPIRED_ERROR = "flink_tasks.TaskExpiredError"


class FlinkTasksError(Exception):
    """Root of every error raised by flink-tasks."""


class PipelineDefinitionError(FlinkTasksError, ValueError):
    """A pipeline was built wrongly; raised when it is built, in the caller's process."""


class SerializationError(FlinkTasksError, ValueError):
    """A value cannot be serialized for the wire (or deserialized from it)."""


class TaskNotFoundError(FlinkTasksError, LookupError):
    """No task is bound under the requested type name."""


class WorkerLostError(FlinkTasksError):
    """The process running a task died (a crash, a segfault, ``os._exit``, a kill) or stopped
    reporting before the task's deadline. The task may or may not have run: see the task's
    retry policy, and write tasks that are safe to run again."""


class MemoryLimitError(WorkerLostError):
    """The process running a task went over the task's memory limit and was stopped."""


class NonRetryableError(Exception):
    """Raise it from a task to fail without retries, whatever its retry policy says."""


class TaskExpiredError(FlinkTasksError, NonRetryableError):
    """A task with `.set(expires=...)` could not start in time (a countdown or eta past its
    expiry, a pipeline paused too long, or a worker too busy to start it); never retried."""


@dataclass(frozen=True)
class TaskException:
    """A task failure as data: what `exceptionally` tasks receive and what the caller is told."""

    id: str
    type: str
    exception_type: str
    exception_message: str
    stacktrace: str = ""
    state: Any = None

    def __str__(self) -> str:
        return f"{self.exception_type}: {self.exception_message}"


class TaskError(FlinkTasksError):
    """A pipeline failed: the remote exception's type, message, traceback and state at failure."""

    def __init__(
        self,
        *,
        task_id: str,
        type: str,
        exception_type: str,
        exception_message: str,
        stacktrace: str = "",
        state: Any = None,
    ) -> None:
        super().__init__(f"{exception_type}: {exception_message}")
        self.task_id = task_id
        self.type = type
        self.exception_type = exception_type
        self.exception_message = exception_message
        self.stacktrace = stacktrace
        self.state = state

    @property
    def exception(self) -> TaskException:
        """The failure as a `TaskException` value."""
        return TaskException(
            id=self.task_id,
            type=self.type,
            exception_type=self.exception_type,
            exception_message=self.exception_message,
            stacktrace=self.stacktrace,
            state=self.state,
        )

    @classmethod
    def from_exception(cls, exc: TaskException) -> TaskError:
        """Build the error raised to the caller from a `TaskException`."""
        error_type: type[TaskError] = (
            PipelineCancelledError if exc.exception_type == CANCELLED_ERROR else TaskError
        )
        return error_type(
            task_id=exc.id,
            type=exc.type,
            exception_type=exc.exception_type,
            exception_message=exc.exception_message,
            stacktrace=exc.stacktrace,
            state=exc.state,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_task_error, (type(self), self.exception))


def _rebuild_task_error(cls: type[TaskError], exc: TaskException) -> TaskError:
    error = TaskError.from_exception(exc)
    error.__class__ = cls
    return error


class PipelineCancelledError(TaskError):
    """The pipeline was cancelled before it finished."""


class ClientError(FlinkTasksError):
    """The client could not complete a call."""


class ResultTimeoutError(ClientError, TimeoutError):
    """No reply arrived within the timeout."""


class TransportError(ClientError):
    """Kafka could not be reached or refused a record."""


class RequestTooLargeError(ClientError, ValueError):
    """A request is over the client's ``max_request_bytes``; it was refused before sending."""


class PipelineNotFoundError(FlinkTasksError, LookupError):
    """No pipeline (or no result yet) is known under that id."""


class ActionError(FlinkTasksError):
    """A task action was refused, e.g. pausing a finished pipeline."""


# Wire names of errors the pipeline function replies with, mapped to client-side exceptions.
NOT_FOUND_ERROR = "flink_tasks.PipelineNotFoundError"
ACTION_ERROR = "flink_tasks.ActionError"
ALREADY_RUNNING_ERROR = "flink_tasks.PipelineAlreadyRunningError"
