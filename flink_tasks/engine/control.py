"""Actions and control: status/result/pause/unpause/cancel, and ending a pipeline early."""

from __future__ import annotations

import logging

from flink_tasks import errors
from flink_tasks._proto import messages_pb2, pipeline_pb2, values_pb2
from flink_tasks.engine import effects, finish, groups, retries, sequence
from flink_tasks.engine.common import (
    FINISHED_STATUSES,
    REQUEST_STORE_SUFFIX,
    S,
    as_action,
    task_exception,
    with_state,
)
from flink_tasks.engine.context import Context
from flink_tasks.engine.unreadable import UnreadableMessage

logger = logging.getLogger(__name__)


def on_action_request(ctx: Context, action: messages_pb2.ActionRequest) -> None:
    run = ctx.state.run
    kind = action.action
    if kind == S.ACTION_GET_REQUEST:
        if run is not None and ctx.state.cell("request"):  # kept here (a small request)
            finish.on_get_request(ctx, action)
            return
        ctx.send(
            ctx.address_id + REQUEST_STORE_SUFFIX,
            messages_pb2.PipelineMessage(get_request=action),
        )
        return
    if kind == S.ACTION_GET_STATUS:
        status = run.status if run is not None and not run.parked else S.PIPELINE_STATUS_PENDING
        ctx.reply_action(action, status=status)
        return
    if kind == S.ACTION_GET_RESULT:
        stored = ctx.state.get_message("result", messages_pb2.Reply)
        if stored is None:
            what = "is unknown" if run is None else "has not finished"
            ctx.reply_error(
                action.reply_topic,
                action.reply_id,
                errors.NOT_FOUND_ERROR,
                f"pipeline {ctx.address_id!r} {what}",
            )
            return
        stored.reply_id = action.reply_id
        ctx.effects.append(effects.SendReply(action.reply_topic, ctx.address_id, stored))
        return
    if run is None or run.parked or run.parent_id:
        ctx.reply_error(
            action.reply_topic,
            action.reply_id,
            errors.NOT_FOUND_ERROR,
            f"pipeline {ctx.address_id!r} is unknown",
        )
        return
    if run.status in FINISHED_STATUSES:
        ctx.reply_error(
            action.reply_topic,
            action.reply_id,
            errors.ACTION_ERROR,
            f"pipeline {ctx.address_id!r} has finished ({S.PipelineStatus.Name(run.status)}); "
            f"{S.Action.Name(kind).removeprefix('ACTION_').lower()} changes nothing",
        )
        return
    apply_control(ctx, kind)
    ctx.reply_action(
        action,
        status=ctx.run.status if ctx.state.run is not None else S.PIPELINE_STATUS_PENDING,
    )


def apply_control(ctx: Context, kind: int) -> None:
    run = ctx.state.run
    if run is None or run.parked or run.status in FINISHED_STATUSES:
        return
    for child_id in run.active_children:
        ctx.send(
            child_id,
            messages_pb2.PipelineMessage(control=messages_pb2.ChildControl(action=as_action(kind))),
        )
    if kind == S.ACTION_PAUSE:
        if not run.paused and not run.cancelling:
            run.paused = True
            run.status = S.PIPELINE_STATUS_PAUSED
            ctx.state.touch_run()
            ctx.emit_status(run.status)
    elif kind == S.ACTION_UNPAUSE:
        if run.paused:
            run.paused = False
            run.held = False
            if not run.cancelling:
                run.status = S.PIPELINE_STATUS_RUNNING
            ctx.state.touch_run()
            ctx.emit_status(run.status)
            resume(ctx)
    elif kind == S.ACTION_CANCEL and not run.cancelling:
        cancel(ctx)


def resume(ctx: Context) -> None:
    run = ctx.run
    pending = list(run.pending_retries)
    del run.pending_retries[:]
    entries = ctx.definition.pipeline.entries
    if run.cursor >= len(entries) or not run.entry_started:
        sequence.start_entry(ctx)  # held at a pause point after the last entry: finish now
    elif entries[run.cursor].WhichOneof("kind") == "group":
        groups.pump_group(ctx)
    for due in pending:
        retries.resend(ctx, due)


def cancel(ctx: Context) -> None:
    run = ctx.run
    run.status = S.PIPELINE_STATUS_CANCELLING
    ctx.emit_status(run.status)
    cancelled = task_exception(
        ctx.address_id,
        "",
        errors.CANCELLED_ERROR,
        f"pipeline {ctx.address_id!r} was cancelled",
    )
    end_with(ctx, cancelled)


def end_with(ctx: Context, error: values_pb2.TaskException) -> None:
    """Stop starting work, ignore running tasks' results, run `finally_do`, reply `error`."""
    run = ctx.run
    run.cancelling = True
    run.paused = False
    run.group_size = 0  # late chain results must not reach the group's dropped slots
    del run.pending_retries[:]
    del run.active_children[:]
    ctx.state.touch_run()
    entries = ctx.definition.pipeline.entries
    last = entries[-1] if entries else None
    has_finally = (
        last is not None
        and last.WhichOneof("kind") == "task"
        and last.task.kind == pipeline_pb2.ENTRY_KIND_FINALLY
    )
    run.outcome.Clear()
    run.outcome.error.CopyFrom(with_state(error, run))
    run.has_outcome = True
    if has_finally and not run.finalizing:
        run.cursor = len(entries) - 1
        run.entry_started = False
        ctx.state.set_slots(None)
        sequence.start_entry(ctx)
    elif not run.finalizing:
        run.cursor = len(entries)
        finish.finish(ctx)


def end_early(ctx: Context, message: str, exception_type: str) -> None:
    """Fail a running pipeline now: children cancelled, `finally_do` run, as on failure."""
    run = ctx.state.run
    if run is None or run.parked or run.status in FINISHED_STATUSES:
        return
    logger.warning("ending pipeline %s: %s", ctx.address_id, message)
    error = with_state(task_exception(ctx.address_id, "", exception_type, message), run)
    if run.finalizing:  # finally_do already runs: do not wait for it
        run.outcome.Clear()
        run.outcome.error.CopyFrom(error)
        run.has_outcome = True
        finish.finish(ctx)
        return
    for child_id in run.active_children:
        cancel = messages_pb2.ChildControl(action=S.ACTION_CANCEL)
        ctx.send(child_id, messages_pb2.PipelineMessage(control=cancel))
    if run.status == S.PIPELINE_STATUS_PAUSED:
        run.status = S.PIPELINE_STATUS_RUNNING
        ctx.emit_status(run.status)
    end_with(ctx, error)


def on_unreadable(ctx: Context, message: UnreadableMessage) -> None:
    start = message.start
    if start is not None:  # a child that cannot start: its parent's entry fails instead
        failure = task_exception(
            start.entry_id,
            "",
            errors.SERIALIZATION_ERROR,
            f"child pipeline {ctx.address_id!r} cannot be started: its start message cannot "
            f"be read ({message.detail})",
        )
        finish.send_to_parent(
            ctx, start.parent_id, start.entry_id, start.invocation, failure=failure, slot=start.slot
        )
        return
    end_early(
        ctx,
        f"pipeline {ctx.address_id!r} received a message it cannot read ({message.detail}); "
        "it was failed rather than left waiting for it",
        errors.SERIALIZATION_ERROR,
    )


def on_control(ctx: Context, control: messages_pb2.ChildControl) -> None:
    """A parent passes an action on to its running child."""
    apply_control(ctx, control.action)
