"""`TaskEnvironment`: run one task as the worker runs it, without a pipeline or a runtime (like
Temporal's ``ActivityEnvironment``).

The arguments, the state and the result go through the same encoding and the same code as in the
worker (`flink_tasks.worker.execute`), so a value the wire cannot carry fails here too. A task
that raises gives a `TaskError` (as a pipeline would report it: ``exception_type``,
``exception_message``, ``stacktrace``), not the original exception. The task's timeout and retry
policy are not applied: one call is one attempt (``attempt=`` sets what `TaskContext.attempt`
says).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from flink_tasks import serialization
from flink_tasks._proto import messages_pb2, pipeline_pb2
from flink_tasks.engine.task_request import task_request
from flink_tasks.errors import TaskError
from flink_tasks.records import SubmittedPipeline, submitted_pipeline
from flink_tasks.registry import FlinkTasks, Task
from flink_tasks.replies import task_error
from flink_tasks.worker.execute import DEFAULT_MAX_RESULT_BYTES, execute_async, execute_sync

_NO_STATE: Any = object()


@dataclass(frozen=True)
class TaskOutcome:
    """What one task attempt returned: its result, its new state (tasks bound
    ``with_state=True``), or the pipeline it returned to run as a child (``result`` is then
    None)."""

    result: Any
    state: Any = None
    pipeline: SubmittedPipeline | None = None


class TaskEnvironment:
    """Runs single tasks of a registry with given arguments, state and context ids.

    Example:
        >>> env = TaskEnvironment(tasks)  # doctest: +SKIP
        >>> env.run(add_state, 5, state=10)  # doctest: +SKIP
        TaskOutcome(result=15, state=15, pipeline=None)
    """

    def __init__(
        self,
        tasks: FlinkTasks,
        *,
        pipeline_id: str = "task-environment",
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        self.tasks = tasks
        self.pipeline_id = pipeline_id
        self.max_result_bytes = max_result_bytes

    def run(
        self,
        task: Task[..., Any],
        *args: Any,
        state: Any = _NO_STATE,
        attempt: int = 1,
        **kwargs: Any,
    ) -> TaskOutcome:
        """Run ``task(*args, **kwargs)`` once, here (an async task on a new event loop).

        Raises:
            TaskError: the task raised, or its result (or state) cannot be encoded.
        """
        request = self.request(task, args, kwargs, state=state, attempt=attempt)
        if self.tasks.get(request.task_type).is_async:
            result = asyncio.run(execute_async(self.tasks, request, self.max_result_bytes))
        else:
            result = execute_sync(self.tasks, request, self.max_result_bytes)
        return self._outcome(task, result)

    async def run_async(
        self,
        task: Task[..., Any],
        *args: Any,
        state: Any = _NO_STATE,
        attempt: int = 1,
        **kwargs: Any,
    ) -> TaskOutcome:
        """`run`, awaited: an async task runs on this loop, a sync one in a thread."""
        request = self.request(task, args, kwargs, state=state, attempt=attempt)
        if self.tasks.get(request.task_type).is_async:
            result = await execute_async(self.tasks, request, self.max_result_bytes)
        else:
            result = await asyncio.to_thread(
                execute_sync, self.tasks, request, self.max_result_bytes
            )
        return self._outcome(task, result)

    def request(
        self,
        task: Task[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        state: Any = _NO_STATE,
        attempt: int = 1,
    ) -> messages_pb2.TaskRequest:
        """The `TaskRequest` the pipeline function would send for this call."""
        entry = task.send(*args, **kwargs).to_proto().entries[0].task
        allow_pickle = task.definition.options.allow_pickle
        return task_request(
            entry,
            entry.args,
            entry.kwargs,
            pipeline_id=self.pipeline_id,
            root_pipeline_id=self.pipeline_id,
            attempt=attempt,
            state=None
            if state is _NO_STATE
            else serialization.encode(state, allow_pickle=allow_pickle),
        )

    def _outcome(self, task: Task[..., Any], result: messages_pb2.TaskResult) -> TaskOutcome:
        allow_pickle = task.definition.options.allow_pickle
        kind = result.WhichOneof("outcome")
        if kind == "error":
            error: TaskError = task_error(result.error, allow_pickle=allow_pickle)
            raise error
        state = (
            serialization.decode(result.state, allow_pickle=allow_pickle)
            if result.has_state
            else None
        )
        if kind == "pipeline":
            request = messages_pb2.PipelineRequest(pipeline=_copy(result.pipeline))
            return TaskOutcome(None, state, submitted_pipeline(request, allow_pickle=allow_pickle))
        return TaskOutcome(serialization.decode(result.result, allow_pickle=allow_pickle), state)


def _copy(pipeline: pipeline_pb2.Pipeline) -> pipeline_pb2.Pipeline:
    out = pipeline_pb2.Pipeline()
    out.CopyFrom(pipeline)
    return out
