"""Compilation of a definition: large groups staged, multi-entry chains parked and long
chains segmented, all as child pipelines, so that every address holds a bounded definition."""

from __future__ import annotations

import math
from collections.abc import Sequence

from flink_tasks._proto import messages_pb2, pipeline_pb2
from flink_tasks.engine.common import can_handle_errors, entries_size, is_finally, task_count
from flink_tasks.engine.context import Context


def compile_pipeline(
    ctx: Context, pipeline: pipeline_pb2.Pipeline, run: messages_pb2.Run
) -> pipeline_pb2.Pipeline:
    """Stage large groups, park multi-entry chains, segment long chains: all as children."""
    out = pipeline_pb2.Pipeline(
        id=pipeline.id, inline=pipeline.inline, deadline_ms=pipeline.deadline_ms
    )
    entries = list(pipeline.entries)
    last = entries.pop() if entries and is_finally(entries[-1]) else None
    for entry in segment(ctx, entries, run):
        if entry.WhichOneof("kind") == "group":
            out.entries.add().group.CopyFrom(compile_group(ctx, entry.group, run))
        else:
            out.entries.append(entry)
    if last is not None:
        out.entries.append(last)
    return out


def segment(
    ctx: Context, entries: list[pipeline_pb2.Entry], run: messages_pb2.Run
) -> list[pipeline_pb2.Entry]:
    """Split a long chain into inline child segments, so no address holds all of it."""
    threshold = max(2, ctx.settings.auto_stage_threshold)
    while len(entries) > threshold:
        segments: list[pipeline_pb2.Entry] = []
        for start in range(0, len(entries), threshold):
            part = entries[start : start + threshold]
            child_id = ctx.new_child_id(run)
            ctx.send(
                child_id,
                messages_pb2.PipelineMessage(
                    define_child=messages_pb2.ChildDefinition(
                        pipeline=pipeline_pb2.Pipeline(id=child_id, entries=part, inline=True),
                        parent_id=ctx.address_id,
                        root_pipeline_id=run.root_pipeline_id,
                        events_topic=run.events_topic,
                    )
                ),
            )
            ref = pipeline_pb2.Entry()
            ref.child.child_id = child_id
            ref.child.size = entries_size(part)
            ref.child.has_exceptionally = any(can_handle_errors(e) for e in part)
            segments.append(ref)
        entries = segments
    return entries


def compile_group(
    ctx: Context, group: pipeline_pb2.GroupEntry, run: messages_pb2.Run
) -> pipeline_pb2.GroupEntry:
    threshold = max(2, ctx.settings.auto_stage_threshold)
    chains: Sequence[pipeline_pb2.Pipeline] = group.chains
    if group.num_stages > 1 or len(chains) > threshold:
        return compile_group(ctx, stage(ctx, group, threshold), run)
    out = pipeline_pb2.GroupEntry(
        group_id=group.group_id,
        max_parallelism=group.max_parallelism,
        return_exceptions=group.return_exceptions,
        flatten=group.flatten,
        pause_after=group.pause_after,
        unordered=group.unordered,
    )
    seen: set[str] = set()
    for position, chain in enumerate(chains):
        if len(chain.entries) == 1 and chain.entries[0].WhichOneof("kind") in ("task", "child"):
            chain_id = chain.entries[0].task.task_id or chain.entries[0].child.child_id
            out.chains.append(chain)
            if chain_id in seen:  # the same pipeline value used twice: results must not collide
                out.chains[-1].entries[0].task.task_id = f"{chain_id}.{position}"
            seen.add(chain_id)
        else:
            child_id = ctx.new_child_id(run)
            ctx.send(
                child_id,
                messages_pb2.PipelineMessage(
                    define_child=messages_pb2.ChildDefinition(
                        pipeline=pipeline_pb2.Pipeline(
                            id=child_id, entries=chain.entries, inline=True
                        ),
                        parent_id=ctx.address_id,
                        root_pipeline_id=run.root_pipeline_id,
                        events_topic=run.events_topic,
                    )
                ),
            )
            ref = out.chains.add(id=child_id, inline=True).entries.add().child
            ref.child_id = child_id
            ref.size = task_count(chain)
    return out


def stage(ctx: Context, group: pipeline_pb2.GroupEntry, threshold: int) -> pipeline_pb2.GroupEntry:
    """Split a group into consecutive stages, each an inline child pipeline of its own group."""
    chains = group.chains
    count = group.num_stages if group.num_stages > 1 else math.ceil(len(chains) / threshold)
    count = max(1, min(count, len(chains)))
    outer_limit = inner_limit = 0
    if group.max_parallelism > 0:
        outer_limit = min(group.max_parallelism, count)
        inner_limit = max(1, group.max_parallelism // outer_limit)
    staged = pipeline_pb2.GroupEntry(
        group_id=group.group_id,
        max_parallelism=outer_limit,
        return_exceptions=group.return_exceptions,
        flatten=True,
        pause_after=group.pause_after,
        unordered=group.unordered,
    )
    base, extra = divmod(len(chains), count)
    start = 0
    for index in range(count):
        size = base + (1 if index < extra else 0)
        stage = pipeline_pb2.Pipeline(id=f"{group.group_id}.s{index}", inline=True)
        stage.entries.add().group.CopyFrom(
            pipeline_pb2.GroupEntry(
                group_id=f"{group.group_id}.s{index}",
                chains=chains[start : start + size],
                max_parallelism=inner_limit,
                return_exceptions=group.return_exceptions,
                flatten=group.flatten,
                unordered=group.unordered,
            )
        )
        staged.chains.append(stage)
        start += size
    return staged
