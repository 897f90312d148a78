"""What the engine asks its shell to do: send messages, schedule them, write records."""

from __future__ import annotations

from dataclasses import dataclass

from flink_tasks._proto import events_pb2, messages_pb2


@dataclass(frozen=True)
class SendTask:
    """Send a task request to a task function."""

    namespace: str
    worker_name: str
    address_id: str
    request: messages_pb2.TaskRequest


@dataclass(frozen=True)
class SendPipelineMessage:
    """Send a message to a pipeline function address (a child, a parent or a store)."""

    pipeline_id: str
    message: messages_pb2.PipelineMessage | messages_pb2.TaskResult
    delay_ms: int = 0


@dataclass(frozen=True)
class SendReply:
    """Write a reply to the caller's reply topic."""

    topic: str
    key: str
    reply: messages_pb2.Reply


@dataclass(frozen=True)
class EmitEvent:
    """Write a pipeline event to the events topic."""

    topic: str
    key: str
    event: events_pb2.PipelineEvent


@dataclass(frozen=True)
class CheckLease:
    """Send `deadline` back to `pipeline_id` the way workers' reports travel (the task-reports
    topic, keyed by the address): it arrives after every report written before it."""

    pipeline_id: str
    deadline: messages_pb2.TaskDeadline


Effect = SendTask | SendPipelineMessage | SendReply | EmitEvent | CheckLease
