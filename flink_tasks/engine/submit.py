"""Submission and child set-up: a pipeline request, a child's definition, a child's start."""

from __future__ import annotations

import logging

from flink_tasks import errors
from flink_tasks._proto import events_pb2, messages_pb2
from flink_tasks.engine import compile, deadlines, effects, events, finish, sequence
from flink_tasks.engine.common import (
    REQUEST_STORE_SUFFIX,
    RUNNING_STATUSES,
    S,
    task_count,
    task_exception,
)
from flink_tasks.engine.context import Context
from flink_tasks.pipeline.builder import pipeline_id_problem

logger = logging.getLogger(__name__)


def on_pipeline_request(ctx: Context, request: messages_pb2.PipelineRequest) -> None:
    run = ctx.state.run
    if refuse_reserved_id(ctx, request):
        return
    if run is not None and run.status in RUNNING_STATUSES and not run.parent_id:
        ctx.reply_error(
            request.reply_topic,
            request.reply_id,
            errors.ALREADY_RUNNING_ERROR,
            f"pipeline {ctx.address_id!r} is already running; wait for it or cancel it",
        )
        return
    if not request.pipeline.entries:
        ctx.reply_error(
            request.reply_topic,
            request.reply_id,
            errors.INVALID_REQUEST_ERROR,
            "the pipeline has no entries",
        )
        return
    invocation = (run.invocation + 1) if run is not None else 1
    # a finished earlier run at this id whose request is at `<id>~request`
    stored_apart = run is not None and not ctx.state.cell("request")
    ctx.state.clear()
    store_request(ctx, request, stored_apart)
    pipeline = request.pipeline
    run = messages_pb2.Run(
        status=S.PIPELINE_STATUS_RUNNING,
        invocation=invocation,
        root_pipeline_id=ctx.address_id,
        reply_topic=request.reply_topic,
        reply_id=request.reply_id,
        events_topic=request.events_topic,
        size=task_count(pipeline),
    )
    run.input.initial.CopyFrom(pipeline.initial)
    if pipeline.initial.has_state:
        run.state.CopyFrom(pipeline.initial.state)
        run.has_state = True
    if request.HasField("trace_context"):
        run.trace_context.CopyFrom(request.trace_context)
    ctx.state.set_run(run)
    ctx.emit(events_pb2.PipelineEvent(pipeline_created=events.created(pipeline, tasks=run.size)))
    ctx.emit_status(S.PIPELINE_STATUS_RUNNING)
    ctx.state.set_definition(compile.compile_pipeline(ctx, pipeline, run))
    deadlines.arm_deadlines(ctx, pipeline.deadline_ms)
    sequence.start_entry(ctx)


def store_request(ctx: Context, request: messages_pb2.PipelineRequest, stored_apart: bool) -> None:
    """Keep the request for `get_request`: a small one in the root's own cell (no extra call),
    a large one at `<id>~request` (never shipped with the root's task results)."""
    data = request.SerializeToString()
    store = ctx.address_id + REQUEST_STORE_SUFFIX
    if len(data) > ctx.settings.inline_request_bytes:
        message = messages_pb2.PipelineMessage(store_request=request)
        ctx.effects.append(effects.SendPipelineMessage(store, message))
        return
    ctx.state.set_raw("request", data)
    if stored_apart:  # clear the earlier run's request there: its expiry would not reach it
        ctx.send(store, messages_pb2.PipelineMessage(expire=messages_pb2.Expire()))


def refuse_reserved_id(ctx: Context, request: messages_pb2.PipelineRequest) -> bool:
    """Refuse a request at a child's or a stored request's address: it would wipe them."""
    run = ctx.state.run
    if run is not None and (run.parent_id or run.parked):
        problem = (
            f"pipeline id {ctx.address_id!r} belongs to a child pipeline of "
            f"{run.root_pipeline_id!r}; submit under an id of your own"
        )
    elif run is None and ctx.state.cell("request"):
        problem = f"pipeline id {ctx.address_id!r} is where a pipeline's request is stored"
    else:
        problem = pipeline_id_problem(ctx.address_id) or ""
    if not problem:
        return False
    logger.warning("refused a pipeline request at %r: %s", ctx.address_id, problem)
    ctx.reply_error(request.reply_topic, request.reply_id, errors.INVALID_REQUEST_ERROR, problem)
    return True


def on_define_child(ctx: Context, definition: messages_pb2.ChildDefinition) -> None:
    run = messages_pb2.Run(
        status=S.PIPELINE_STATUS_PENDING,
        parked=True,
        parent_id=definition.parent_id,
        root_pipeline_id=definition.root_pipeline_id,
        events_topic=definition.events_topic,
        inline=True,
        size=task_count(definition.pipeline),
    )
    ctx.state.clear()
    ctx.state.set_run(run)
    ctx.state.set_definition(compile.compile_pipeline(ctx, definition.pipeline, run))


def on_start_child(ctx: Context, start: messages_pb2.ChildStart) -> None:
    run = ctx.state.run
    if start.has_pipeline:
        run = messages_pb2.Run(
            parent_id=start.parent_id,
            root_pipeline_id=start.root_pipeline_id,
            events_topic=start.events_topic,
            inline=start.pipeline.inline,
            size=task_count(start.pipeline),
        )
        ctx.state.clear()
        ctx.state.set_run(run)
        ctx.state.set_definition(compile.compile_pipeline(ctx, start.pipeline, run))
        ctx.emit(
            events_pb2.PipelineEvent(
                pipeline_created=events.created(start.pipeline, start.parent_id, tasks=run.size)
            )
        )
    elif run is None or not run.parked:
        # Cannot happen while messages between two addresses stay in order; answer, never hang.
        failure = task_exception(
            ctx.address_id,
            "",
            errors.INTERNAL_ERROR,
            f"child pipeline {ctx.address_id!r} has no definition",
        )
        finish.send_to_parent(
            ctx, start.parent_id, start.entry_id, start.invocation, failure=failure
        )
        return
    run.parked = False
    run.status = S.PIPELINE_STATUS_RUNNING
    run.parent_entry_id = start.entry_id
    run.parent_invocation = start.invocation
    run.parent_slot = start.slot
    run.invocation = 1
    run.paused = start.paused
    if start.has_pipeline:
        deadlines.arm_deadlines(ctx, start.pipeline.deadline_ms)
    run.input.CopyFrom(start.input)
    if start.HasField("trace_context"):
        run.trace_context.CopyFrom(start.trace_context)
    if start.has_state:
        run.state.CopyFrom(start.state)
        run.has_state = True
    if start.failing:  # a later segment of a long chain, reached with an error
        run.failing = True
        run.error.CopyFrom(start.error)
    ctx.state.touch_run()
    sequence.start_entry(ctx)
