"""Drive `step()` directly: addresses' states in memory, a fixed clock, counted child ids, and
effects summarised as tuples so that a test states them exactly."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flink_tasks import serialization
from flink_tasks._proto import messages_pb2, pipeline_pb2, values_pb2
from flink_tasks.engine import EngineMessage, EngineSettings, step
from flink_tasks.engine import effects as fx
from flink_tasks.engine.state import AddressState
from flink_tasks.errors import TaskException

Summary = tuple[Any, ...]


def task(task_id: str, *args: Any, kind: int = 0, **policy: Any) -> pipeline_pb2.Entry:
    entry = pipeline_pb2.Entry()
    entry.task.task_id = task_id
    entry.task.task_type = f"t.{task_id}"
    entry.task.kind = kind  # type: ignore[assignment]
    if args:
        entry.task.args.CopyFrom(serialization.encode_args(args))
        entry.task.has_args = True
    if policy:
        entry.task.retry_policy.CopyFrom(pipeline_pb2.RetryPolicy(**policy))
        entry.task.has_retry_policy = True
    return entry


def group(group_id: str, *chains: list[pipeline_pb2.Entry], **options: Any) -> pipeline_pb2.Entry:
    entry = pipeline_pb2.Entry()
    entry.group.group_id = group_id
    for chain in chains:
        entry.group.chains.add().entries.extend(chain)
    for name, value in options.items():
        setattr(entry.group, name, value)
    return entry


def request(*entries: pipeline_pb2.Entry, deadline_ms: int = 0) -> messages_pb2.PipelineRequest:
    pipeline = pipeline_pb2.Pipeline(id="P", entries=entries, deadline_ms=deadline_ms)
    return messages_pb2.PipelineRequest(
        pipeline=pipeline, reply_topic="replies", reply_id="r1", events_topic="events"
    )


def ok(task_id: str, value: Any, *, slot: int = 0, attempt: int = 1) -> messages_pb2.TaskResult:
    return messages_pb2.TaskResult(
        task_id=task_id,
        result=serialization.encode(value),
        invocation=1,
        slot=slot,
        attempt=attempt,
    )


def failed(
    task_id: str, *, slot: int = 0, attempt: int = 1, retryable: bool = True
) -> messages_pb2.TaskResult:
    error = values_pb2.TaskException(
        id=task_id, exception_type="builtins.ValueError", exception_message="bad"
    )
    error.retryable = retryable
    return messages_pb2.TaskResult(
        task_id=task_id, error=error, invocation=1, slot=slot, attempt=attempt
    )


def action(kind: int) -> messages_pb2.ActionRequest:
    return messages_pb2.ActionRequest(
        pipeline_id="P",
        action=kind,  # type: ignore[arg-type]
        reply_topic="replies",
        reply_id="a1",
    )


@dataclass
class Engine:
    """Addresses of the pipeline function, stepped one message at a time."""

    # one address per task attempt: the cases name a task's address by its id (task buckets:
    # tests/inprocess/test_task_buckets.py)
    settings: EngineSettings = field(
        default_factory=lambda: EngineSettings(
            stall_timeout=None, retention=timedelta(seconds=60), task_buckets=0
        )
    )
    now: int = 1_000
    states: dict[str, AddressState] = field(default_factory=dict)
    next_id: int = 0

    def ids(self) -> str:
        self.next_id += 1
        return f"c{self.next_id}"

    def step(self, address: str, message: EngineMessage) -> list[Summary]:
        state = self.states.setdefault(address, AddressState())
        effects = step(address, state, message, self.settings, clock=lambda: self.now, ids=self.ids)
        state.raw.update(state.encoded())  # written back, as the shell does
        state.dirty.clear()
        return [summarise(effect) for effect in effects]

    def run(self, address: str = "P") -> messages_pb2.Run:
        run = self.states[address].run
        assert run is not None
        return run


def summarise(effect: fx.Effect) -> Summary:
    if isinstance(effect, fx.SendTask):
        request = effect.request
        args = serialization.decode_args(request.args)
        return ("task", effect.address_id, request.attempt, request.slot, args)
    if isinstance(effect, fx.SendReply):
        reply = effect.reply
        outcome = reply.WhichOneof("outcome")
        if outcome == "result":
            return ("reply", "result", _plain(serialization.decode(reply.result)))
        if outcome == "error":
            return ("reply", "error", reply.error.exception_type, reply.error.exception_message)
        if outcome == "request":
            return ("reply", "request", reply.request.reply_id)
        return ("reply", "status", messages_pb2.PipelineStatus.Name(reply.status))
    if isinstance(effect, fx.EmitEvent):
        event = effect.event
        kind = event.WhichOneof("event")
        if kind == "status_changed":
            return ("event", messages_pb2.PipelineStatus.Name(event.status_changed.status))
        if kind == "group_progress":
            progress = event.group_progress
            return ("event", "progress", progress.completed, progress.total)
        if kind == "tasks_skipped":
            return ("event", "skipped", list(event.tasks_skipped.task_ids))
        return ("event", kind)
    if isinstance(effect, fx.CheckLease):
        return ("check_lease", effect.pipeline_id, effect.deadline.task_id, effect.deadline.beat)
    message = effect.message
    if isinstance(message, messages_pb2.TaskResult):
        return ("send", effect.pipeline_id, "task_result", effect.delay_ms)
    return ("send", effect.pipeline_id, message.WhichOneof("kind"), effect.delay_ms)


def _plain(value: Any) -> Any:
    """A failure kept in a group's result, as `type: message`."""
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, TaskException):
        return f"{value.exception_type}: {value.exception_message}"
    return value
