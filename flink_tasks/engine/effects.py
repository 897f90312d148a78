"""What the engine asks its shell to do: send messages, schedule them, write records.

Named tuples (immutable, and cheap to make: the engine makes one or more per message)."""

from __future__ import annotations

from typing import NamedTuple

from flink_tasks._proto import events_pb2, messages_pb2


class SendTask(NamedTuple):
    """Send a task request to a task function."""

    namespace: str
    worker_name: str
    address_id: str
    request: messages_pb2.TaskRequest


class SendPipelineMessage(NamedTuple):
    """Send a message to a pipeline function address (a child, a parent or a store)."""

    pipeline_id: str
    message: messages_pb2.PipelineMessage | messages_pb2.TaskResult
    delay_ms: int = 0


class SendReply(NamedTuple):
    """Write a reply to the caller's reply topic."""

    topic: str
    key: str
    reply: messages_pb2.Reply


class EmitEvent(NamedTuple):
    """Write a pipeline event to the events topic."""

    topic: str
    key: str
    event: events_pb2.PipelineEvent


class CheckLease(NamedTuple):
    """Send `deadline` back to `pipeline_id` the way workers' reports travel (the task-reports
    topic, keyed by the address): it arrives after every report written before it."""

    pipeline_id: str
    deadline: messages_pb2.TaskDeadline


Effect = SendTask | SendPipelineMessage | SendReply | EmitEvent | CheckLease
