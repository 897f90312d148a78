"""Shared names of the engine: statuses, and small pure helpers over the pipeline messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from flink_tasks import errors
from flink_tasks._proto import messages_pb2, pipeline_pb2, values_pb2

S = messages_pb2  # statuses and actions
RUNNING_STATUSES = (
    S.PIPELINE_STATUS_RUNNING,
    S.PIPELINE_STATUS_PAUSED,
    S.PIPELINE_STATUS_CANCELLING,
)
FINISHED_STATUSES = (
    S.PIPELINE_STATUS_COMPLETED,
    S.PIPELINE_STATUS_FAILED,
    S.PIPELINE_STATUS_CANCELLED,
)
REQUEST_STORE_SUFFIX = "~request"


def check_slack_ms(stall_ms: int) -> int:
    """How much later than the stall timeout a root's first stall check comes: 1 % of it, at
    most a minute. A pipeline that finishes within that long has the same check expire it
    (`finish.arm_expiry`): one delayed message per short pipeline instead of two."""
    return min(stall_ms // 100, 60_000)


def is_finally(entry: pipeline_pb2.Entry) -> bool:
    return entry.WhichOneof("kind") == "task" and entry.task.kind == pipeline_pb2.ENTRY_KIND_FINALLY


def can_handle_errors(entry: pipeline_pb2.Entry) -> bool:
    kind = entry.WhichOneof("kind")
    if kind == "task":
        return entry.task.kind == pipeline_pb2.ENTRY_KIND_EXCEPTIONALLY
    return kind == "child" and entry.child.has_exceptionally


def entry_size(entry: pipeline_pb2.Entry) -> int:
    kind = entry.WhichOneof("kind")
    if kind == "task":
        return 1
    if kind == "child":
        return entry.child.size
    return sum(task_count(chain) for chain in entry.group.chains)


def as_status(value: int) -> messages_pb2.PipelineStatus.ValueType:
    return cast("messages_pb2.PipelineStatus.ValueType", value)


def as_action(value: int) -> messages_pb2.Action.ValueType:
    return cast("messages_pb2.Action.ValueType", value)


def bucketed(sender: str, slot: int, buckets: int) -> bool:
    """Whether a task goes to a bucket address shared with other tasks: only a group's tasks
    (slot > 0) run side by side; a pipeline's other tasks run one at a time, nothing to batch."""
    return buckets > 0 and slot > 0 and bool(sender)


def task_address(
    task_id: str, attempt: int, sender: str = "", slot: int = 0, buckets: int = 0
) -> str:
    """The task function address of an attempt: its own, or (`bucketed`) one of `buckets`
    addresses of the sending pipeline address, by slot (StateFun batches what queues there)."""
    if bucketed(sender, slot, buckets):
        return f"{sender}#b{slot % buckets}"
    # One address per task attempt: attempts never queue behind each other's batch.
    return task_id if attempt <= 1 else f"{task_id}#{attempt}"


def task_exception(
    task_id: str, task_type: str, exception_type: str, message: str, stacktrace: str = ""
) -> values_pb2.TaskException:
    return values_pb2.TaskException(
        id=task_id,
        type=task_type,
        exception_type=exception_type,
        exception_message=message,
        stacktrace=stacktrace,
    )


def with_state(error: values_pb2.TaskException, run: messages_pb2.Run) -> values_pb2.TaskException:
    if not error.has_state and run.has_state:
        error.state.CopyFrom(run.state)
        error.has_state = True
    return error


def final_error(error: values_pb2.TaskException, attempts: int) -> values_pb2.TaskException:
    out = values_pb2.TaskException()
    out.CopyFrom(error)
    if attempts > 1 and "attempts)" not in out.exception_message:
        out.exception_message = f"{out.exception_message} (failed after {attempts} attempts)"
    out.attempts = attempts
    out.retryable = False
    return out


def aggregate(
    group_id: str, failures: Sequence[values_pb2.TaskException]
) -> values_pb2.TaskException:
    lines: list[str] = []
    for failure in failures:
        if failure.exception_type == errors.AGGREGATED_ERROR:
            lines.extend(failure.exception_message.splitlines()[1:])
        else:
            lines.append(f"  {failure.id}: {failure.exception_type}: {failure.exception_message}")
    message = f"{len(lines)} chain(s) of group {group_id} failed:\n" + "\n".join(lines)
    stacktrace = "\n".join(f.stacktrace for f in failures if f.stacktrace)
    return task_exception(group_id, "", errors.AGGREGATED_ERROR, message, stacktrace)


def entry_task_ids(entry: pipeline_pb2.Entry) -> list[str]:
    kind = entry.WhichOneof("kind")
    if kind == "task":
        return [entry.task.task_id]
    if kind == "child":
        return [entry.child.child_id]
    return [entry.group.group_id]


def task_count(pipeline: pipeline_pb2.Pipeline) -> int:
    return entries_size(pipeline.entries)


def entries_size(entries: Sequence[pipeline_pb2.Entry]) -> int:
    """`sum(entry_size(e) for e in entries)`, with tasks (most entries) counted inline: this
    runs over every entry of every submitted pipeline, more than once."""
    total = 0
    for entry in entries:
        if entry.WhichOneof("kind") == "task":
            total += 1
        else:
            total += entry_size(entry)
    return total
