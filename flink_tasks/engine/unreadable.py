"""Messages between pipeline addresses that cannot be parsed, turned into failures.

A TaskResult or PipelineMessage comes from our own functions, so a pipeline is waiting for it;
dropping it would leave that pipeline RUNNING forever. Its head (ids, invocation, slot) is
read with shallow message types that skip everything else as unknown fields, so even a message
nested past protobuf's limit names the task or child it answers for.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from flink_tasks import errors
from flink_tasks._proto import messages_pb2, values_pb2


@dataclass(frozen=True)
class UnreadableMessage:
    """What could be read of an unparsable message: a reason, and a child start's head."""

    detail: str
    start: messages_pb2.UnreadableChildStartHead | None = None


def salvage_task_result(payload: bytes, detail: str) -> messages_pb2.TaskResult | UnreadableMessage:
    """An unparsable TaskResult: the task's failure if its head can be read."""
    try:
        head = messages_pb2.UnreadableTaskResultHead.FromString(payload)
    except DecodeError:
        return UnreadableMessage(detail)
    if not head.task_id:
        return UnreadableMessage(detail)
    return _failed_result(head, detail)


def salvage_pipeline_message(
    payload: bytes, detail: str
) -> messages_pb2.PipelineMessage | UnreadableMessage:
    """An unparsable PipelineMessage: a child's failure, or what its head names."""
    try:
        head = messages_pb2.UnreadablePipelineMessageHead.FromString(payload)
    except DecodeError:
        return UnreadableMessage(detail)
    if head.HasField("child_result") and head.child_result.task_id:
        return messages_pb2.PipelineMessage(child_result=_failed_result(head.child_result, detail))
    if head.HasField("start_child") and head.start_child.parent_id:
        return UnreadableMessage(detail, head.start_child)
    return UnreadableMessage(detail)


def _failed_result(
    head: messages_pb2.UnreadableTaskResultHead, detail: str
) -> messages_pb2.TaskResult:
    error = values_pb2.TaskException(
        id=head.task_id,
        exception_type=errors.SERIALIZATION_ERROR,
        exception_message=(
            f"the result of {head.task_id!r} reached its pipeline but cannot be read ({detail}); "
            "it is probably nested too deeply: return flatter data"
        ),
    )
    return messages_pb2.TaskResult(
        task_id=head.task_id,
        error=error,
        attempt=head.attempt,
        invocation=head.invocation,
        slot=head.slot,
    )
