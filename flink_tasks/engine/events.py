"""Pipeline events: the created event's structure, group progress."""

from __future__ import annotations

from flink_tasks._proto import events_pb2, pipeline_pb2
from flink_tasks.engine.common import task_count
from flink_tasks.engine.context import Context


def progress(ctx: Context, completed: int) -> None:
    run = ctx.run
    total = run.group_size
    every = max(1, total // max(1, ctx.settings.progress_events))
    if completed == total or completed % every == 0:
        ctx.emit(
            events_pb2.PipelineEvent(
                group_progress=events_pb2.GroupProgress(
                    group_id=run.group_id, completed=completed, total=total
                )
            )
        )


MAX_STRUCTURE_ENTRIES = 1000  # in a PipelineCreated event, so that it always fits a Kafka record


def created(
    pipeline: pipeline_pb2.Pipeline, parent_id: str = "", tasks: int | None = None
) -> events_pb2.PipelineCreated:
    """The PipelineCreated event: the shape, cut after MAX_STRUCTURE_ENTRIES entries; `tasks`
    is `task_count(pipeline)` when the caller has it already."""
    budget = [MAX_STRUCTURE_ENTRIES]
    return events_pb2.PipelineCreated(
        pipeline=structure(pipeline, budget),
        parent_id=parent_id,
        task_count=task_count(pipeline) if tasks is None else tasks,
        truncated=budget[0] < 0,
    )


def structure(pipeline: pipeline_pb2.Pipeline, budget: list[int]) -> pipeline_pb2.Pipeline:
    """The pipeline's shape for events: arguments and state left out; `budget` counts entries."""
    out = pipeline_pb2.Pipeline(id=pipeline.id, inline=pipeline.inline)
    for entry in pipeline.entries:
        budget[0] -= 1
        if budget[0] < 0:
            break
        kind = entry.WhichOneof("kind")
        if kind == "task":
            task = out.entries.add().task
            task.CopyFrom(entry.task)
            task.ClearField("args")
            task.ClearField("kwargs")
        elif kind == "child":
            out.entries.append(entry)
        else:
            group = out.entries.add().group
            group.group_id = entry.group.group_id
            group.max_parallelism = entry.group.max_parallelism
            group.num_stages = entry.group.num_stages
            group.return_exceptions = entry.group.return_exceptions
            for chain in entry.group.chains:
                if budget[0] < 0:
                    break
                group.chains.append(structure(chain, budget))
    return out
