"""What `get_request` and event streams return: the project's own frozen dataclasses, read from
the wire form once, so no generated ``_pb2`` class reaches a user."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from flink_tasks import serialization
from flink_tasks._proto import events_pb2, messages_pb2, pipeline_pb2
from flink_tasks.types import PipelineStatus

EntryKind = Literal["task", "exceptionally", "finally"]
_KINDS: dict[int, EntryKind] = {
    pipeline_pb2.ENTRY_KIND_TASK: "task",
    pipeline_pb2.ENTRY_KIND_EXCEPTIONALLY: "exceptionally",
    pipeline_pb2.ENTRY_KIND_FINALLY: "finally",
}


@dataclass(frozen=True)
class RequestedTask:
    """One task entry as submitted. ``args`` is None when the previous result is passed on."""

    task_id: str
    task_type: str
    kind: EntryKind = "task"
    args: tuple[Any, ...] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    display_name: str = ""


@dataclass(frozen=True)
class RequestedGroup:
    """An `in_parallel` group as submitted: its chains, each a tuple of entries."""

    group_id: str
    chains: tuple[tuple[RequestedEntry, ...], ...]
    max_parallelism: int = 0
    num_stages: int = 0
    return_exceptions: bool = False


@dataclass(frozen=True)
class RequestedChild:
    """A part of a long pipeline run as a child pipeline (engine-made, seen in events)."""

    child_id: str
    size: int


RequestedEntry = RequestedTask | RequestedGroup | RequestedChild


@dataclass(frozen=True)
class SubmittedPipeline:
    """The request a pipeline was submitted with (`get_request`)."""

    pipeline_id: str
    entries: tuple[RequestedEntry, ...]
    deadline: timedelta | None = None
    inline: bool = False
    reply_topic: str = ""
    events_topic: str = ""

    def task_count(self) -> int:
        """Task entries, those in groups included."""
        return sum(_count(entry) for entry in self.entries)


@dataclass(frozen=True)
class GroupProgress:
    group_id: str
    completed: int
    total: int


@dataclass(frozen=True)
class PipelineCreated:
    """A pipeline's structure (arguments left out); ``truncated``: large groups list only their
    first chains."""

    entries: tuple[RequestedEntry, ...]
    parent_id: str = ""
    task_count: int = 0
    truncated: bool = False


EventKind = Literal["pipeline_created", "status_changed", "tasks_skipped", "group_progress"]


@dataclass(frozen=True)
class PipelineEvent:
    """One event of a pipeline (or of one of its children): ``kind`` says which field is set."""

    pipeline_id: str
    root_pipeline_id: str
    timestamp_ms: int
    kind: EventKind
    created: PipelineCreated | None = None
    status: PipelineStatus | None = None
    skipped_task_ids: tuple[str, ...] = ()
    progress: GroupProgress | None = None


def submitted_pipeline(
    request: messages_pb2.PipelineRequest, *, allow_pickle: bool = False
) -> SubmittedPipeline:
    """A stored `PipelineRequest` as a `SubmittedPipeline` (arguments decoded)."""
    pipeline = request.pipeline
    return SubmittedPipeline(
        pipeline_id=pipeline.id,
        entries=_entries(pipeline, allow_pickle),
        deadline=timedelta(milliseconds=pipeline.deadline_ms) if pipeline.deadline_ms else None,
        inline=pipeline.inline,
        reply_topic=request.reply_topic,
        events_topic=request.events_topic,
    )


def pipeline_event(event: events_pb2.PipelineEvent) -> PipelineEvent:
    """An event from the events topic as a `PipelineEvent`."""
    kind = event.WhichOneof("event")
    common: dict[str, Any] = {
        "pipeline_id": event.pipeline_id,
        "root_pipeline_id": event.root_pipeline_id,
        "timestamp_ms": event.timestamp_ms,
    }
    if kind == "pipeline_created":
        created = event.pipeline_created
        return PipelineEvent(
            **common,
            kind=kind,
            created=PipelineCreated(
                entries=_entries(created.pipeline, allow_pickle=False, with_args=False),
                parent_id=created.parent_id,
                task_count=created.task_count,
                truncated=created.truncated,
            ),
        )
    if kind == "status_changed":
        return PipelineEvent(
            **common, kind=kind, status=PipelineStatus(event.status_changed.status)
        )
    if kind == "tasks_skipped":
        return PipelineEvent(
            **common, kind=kind, skipped_task_ids=tuple(event.tasks_skipped.task_ids)
        )
    if kind == "group_progress":
        p = event.group_progress
        return PipelineEvent(
            **common, kind=kind, progress=GroupProgress(p.group_id, p.completed, p.total)
        )
    raise ValueError(f"an event of an unknown kind ({kind!r}); upgrade flink-tasks")


def _entries(
    pipeline: pipeline_pb2.Pipeline, allow_pickle: bool, *, with_args: bool = True
) -> tuple[RequestedEntry, ...]:
    return tuple(_entry(e, allow_pickle, with_args) for e in pipeline.entries)


def _entry(entry: pipeline_pb2.Entry, allow_pickle: bool, with_args: bool) -> RequestedEntry:
    which = entry.WhichOneof("kind")
    if which == "task":
        task = entry.task
        args: tuple[Any, ...] | None = None
        kwargs: dict[str, Any] = {}
        if with_args and task.has_args:
            args = tuple(serialization.decode_args(task.args, allow_pickle=allow_pickle))
            kwargs = serialization.decode_kwargs(task.kwargs, allow_pickle=allow_pickle)
        return RequestedTask(
            task_id=task.task_id,
            task_type=task.task_type,
            kind=_KINDS.get(task.kind, "task"),
            args=args,
            kwargs=kwargs,
            display_name=task.display_name,
        )
    if which == "group":
        group = entry.group
        return RequestedGroup(
            group_id=group.group_id,
            chains=tuple(_entries(c, allow_pickle, with_args=with_args) for c in group.chains),
            max_parallelism=group.max_parallelism,
            num_stages=group.num_stages,
            return_exceptions=group.return_exceptions,
        )
    if which == "child":
        return RequestedChild(child_id=entry.child.child_id, size=entry.child.size)
    raise ValueError(f"a pipeline entry of an unknown kind ({which!r}); upgrade flink-tasks")


def _count(entry: RequestedEntry) -> int:
    if isinstance(entry, RequestedTask):
        return 1
    if isinstance(entry, RequestedChild):
        return entry.size
    return sum(_count(e) for chain in entry.chains for e in chain)
