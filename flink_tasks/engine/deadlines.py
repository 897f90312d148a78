"""Pipeline deadlines and the stall timeout (a root ends a pipeline that makes no progress)."""

from __future__ import annotations

from flink_tasks import errors
from flink_tasks._proto import messages_pb2
from flink_tasks.engine import control, finish
from flink_tasks.engine.common import FINISHED_STATUSES, check_slack_ms
from flink_tasks.engine.context import Context


def arm_deadlines(ctx: Context, deadline_ms: int) -> None:
    """At the start: the pipeline's own deadline, and (at a root) the one stall check."""
    run = ctx.run
    if deadline_ms > 0:
        due = messages_pb2.PipelineDeadlineDue(invocation=run.invocation)
        ctx.send(ctx.address_id, messages_pb2.PipelineMessage(deadline_due=due), deadline_ms)
    stall = ctx.stall_ms()
    if stall > 0 and not run.parent_id:
        run.last_progress_ms = ctx.now_ms()
        arm_progress_check(ctx, stall + check_slack_ms(stall))


def arm_progress_check(ctx: Context, delay_ms: int) -> None:
    run = ctx.run
    delay_ms = max(1, delay_ms)
    run.check_due_ms = ctx.now_ms() + delay_ms
    ctx.state.touch_run()
    check = messages_pb2.PipelineProgressCheck(invocation=run.invocation)
    ctx.send(ctx.address_id, messages_pb2.PipelineMessage(progress_check=check), delay_ms)


def note_progress(ctx: Context) -> None:
    """A result arrived: a root remembers when; a child tells its root, at most every half
    stall timeout, so that one pending check per root suffices (O(1) per result)."""
    stall = ctx.settings.stall_ms
    run = ctx.state.run
    if stall <= 0 or run is None or run.parked or run.status in FINISHED_STATUSES:
        return
    now = ctx.clock()
    if not run.parent_id:
        run.last_progress_ms = now
        ctx.state.touch_run()
    elif now - run.last_beat_ms >= stall // 2 and run.root_pipeline_id:
        run.last_beat_ms = now
        ctx.state.touch_run()
        beat = messages_pb2.PipelineMessage(progress_beat=messages_pb2.PipelineProgressBeat())
        ctx.send(run.root_pipeline_id, beat)


def on_progress_check(ctx: Context, check: messages_pb2.PipelineProgressCheck) -> None:
    run = ctx.state.run
    if run is not None and run.expires_at_check and run.invocation == check.invocation:
        finish.expire_run(ctx, run.invocation)  # finished, and its retention is over
        return
    stall = ctx.stall_ms()
    if (
        run is None
        or run.invocation != check.invocation
        or run.status in FINISHED_STATUSES
        or run.parent_id
        or stall <= 0
    ):
        return
    now = ctx.now_ms()
    if run.paused:  # held by the user, not stalled: the wait starts again at unpause
        run.last_progress_ms = now
        ctx.state.touch_run()
    idle = now - run.last_progress_ms
    if idle < stall:
        arm_progress_check(ctx, stall - idle)
        return
    control.end_early(
        ctx,
        f"pipeline {ctx.address_id!r} made no progress (no task result anywhere in it) for "
        f"{idle / 1000:g} s, over the stall timeout of {stall / 1000:g} s "
        "(EngineSettings.stall_timeout): it was ended as orphaned",
        errors.PIPELINE_DEADLINE_ERROR,
    )


def on_deadline_due(ctx: Context, due: messages_pb2.PipelineDeadlineDue) -> None:
    run = ctx.state.run
    if run is None or run.invocation != due.invocation:
        return
    definition = ctx.state.definition
    deadline_ms = definition.pipeline.deadline_ms if definition is not None else 0
    control.end_early(
        ctx,
        f"pipeline {ctx.address_id!r} did not finish within its deadline of "
        f"{deadline_ms / 1000:g} s",
        errors.PIPELINE_DEADLINE_ERROR,
    )


def on_progress_beat(ctx: Context, beat: messages_pb2.PipelineProgressBeat) -> None:
    """A child made progress: noted by `step` (as for every progress message); nothing else."""
