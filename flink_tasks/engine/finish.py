"""Finishing: the reply (or the result to a parent), retention, the stored request, expiry."""

from __future__ import annotations

import logging

from flink_tasks import errors
from flink_tasks._proto import messages_pb2, values_pb2
from flink_tasks.engine import effects, values
from flink_tasks.engine.common import (
    FINISHED_STATUSES,
    REQUEST_STORE_SUFFIX,
    S,
    check_slack_ms,
    task_exception,
)
from flink_tasks.engine.context import Context

logger = logging.getLogger(__name__)


def current_outcome(ctx: Context) -> messages_pb2.Reply:
    run = ctx.run
    outcome = messages_pb2.Reply()
    if run.failing:
        outcome.error.CopyFrom(run.error)
    elif run.input.has_previous:
        outcome.result.CopyFrom(run.input.previous)
    else:
        outcome.result.none = True
    return outcome


def finish(ctx: Context) -> None:
    run = ctx.run
    outcome = run.outcome if run.has_outcome else current_outcome(ctx)
    if run.has_state:
        outcome.state.CopyFrom(run.state)
        outcome.has_state = True
    if run.parent_id:
        finish_child(ctx, run, outcome)
        return
    outcome.reply_id = run.reply_id
    outcome.pipeline_id = ctx.address_id
    if (
        outcome.ByteSize() > ctx.settings.max_reply_bytes
        and outcome.WhichOneof("outcome") == "result"
    ):
        size = outcome.ByteSize()
        outcome.ClearField("result")
        outcome.error.CopyFrom(
            task_exception(
                ctx.address_id,
                "",
                errors.SERIALIZATION_ERROR,
                f"the pipeline's result is {size} bytes, above the "
                f"{ctx.settings.max_reply_bytes}-byte "
                "reply limit; return a reference (e.g. a storage key) instead of the data",
            )
        )
        outcome.ClearField("state")
        outcome.has_state = False
    if outcome.WhichOneof("outcome") == "error":
        cancelled = outcome.error.exception_type == errors.CANCELLED_ERROR
        status = S.PIPELINE_STATUS_CANCELLED if cancelled else S.PIPELINE_STATUS_FAILED
    else:
        status = S.PIPELINE_STATUS_COMPLETED
    invocation = run.invocation
    reply_topic = run.reply_topic
    events_topic = run.events_topic
    pending_check_ms = run.check_due_ms
    ctx.state.clear(keep_request=True)
    finished = messages_pb2.Run(
        status=status,
        invocation=invocation,
        root_pipeline_id=ctx.address_id,
        reply_topic=reply_topic,
        events_topic=events_topic,
    )
    ctx.state.set_run(finished)
    ctx.state.set_raw("result", outcome.SerializeToString())
    if reply_topic:
        ctx.effects.append(effects.SendReply(reply_topic, ctx.address_id, outcome))
    ctx.emit_status(status)
    arm_expiry(ctx, finished, pending_check_ms)


def arm_expiry(ctx: Context, finished: messages_pb2.Run, pending_check_ms: int) -> None:
    """Retention: an `Expire` when it is over, or none where the root's pending stall check
    comes due at most its slack later (`common.check_slack_ms`): that check expires it."""
    retention_ms = int(ctx.settings.retention.total_seconds() * 1000)
    late_ms = pending_check_ms - (ctx.now_ms() + retention_ms)
    if pending_check_ms and 0 <= late_ms <= check_slack_ms(ctx.stall_ms()):
        finished.check_due_ms = pending_check_ms
        finished.expires_at_check = True
        return
    expire = messages_pb2.PipelineMessage(
        expire=messages_pb2.Expire(invocation=finished.invocation)
    )
    ctx.send(ctx.address_id, expire, delay_ms=retention_ms)


def finish_child(ctx: Context, run: messages_pb2.Run, outcome: messages_pb2.Reply) -> None:
    failure = outcome.error if outcome.WhichOneof("outcome") == "error" else None
    state = outcome.state if (outcome.has_state and run.inline) else None
    send_to_parent(
        ctx,
        run.parent_id,
        run.parent_entry_id,
        run.parent_invocation,
        result=outcome.result,
        failure=failure,
        state=state,
        slot=run.parent_slot,
    )
    ctx.state.clear()


def send_to_parent(
    ctx: Context,
    parent_id: str,
    entry_id: str,
    invocation: int,
    *,
    result: values_pb2.Value | None = None,
    failure: values_pb2.TaskException | None = None,
    state: values_pb2.Value | None = None,
    slot: int = 0,
) -> None:
    message = messages_pb2.TaskResult(task_id=entry_id, invocation=invocation, slot=slot)
    if failure is not None:
        message.error.CopyFrom(failure)
    else:
        message.result.CopyFrom(result if result is not None else values.none_value())
    if state is not None:
        message.state.CopyFrom(state)
        message.has_state = True
    ctx.send(parent_id, messages_pb2.PipelineMessage(child_result=message))


def on_expire(ctx: Context, expire: messages_pb2.Expire) -> None:
    run = ctx.state.run
    if run is None and ctx.address_id.endswith(REQUEST_STORE_SUFFIX):
        ctx.state.clear()
        return
    expire_run(ctx, expire.invocation)


def expire_run(ctx: Context, invocation: int) -> None:
    """Retention is over: clear a finished run of that invocation, and its stored request."""
    run = ctx.state.run
    if run is not None and run.invocation == invocation and run.status in FINISHED_STATUSES:
        stored_here = bool(ctx.state.cell("request"))
        ctx.state.clear()
        if not stored_here:
            store = ctx.address_id + REQUEST_STORE_SUFFIX
            expire = messages_pb2.Expire(invocation=invocation)
            ctx.send(store, messages_pb2.PipelineMessage(expire=expire))


def fail_internal(ctx: Context, stacktrace: str) -> None:
    """An engine bug: fail this pipeline with an internal error rather than leave it hanging."""
    ctx.effects.clear()
    ctx.skipped.clear()
    run = ctx.state.run
    if run is None or run.status in FINISHED_STATUSES:
        return
    try:
        run.failing = True
        run.error.CopyFrom(
            task_exception(
                ctx.address_id,
                "",
                errors.INTERNAL_ERROR,
                "the pipeline engine failed",
                stacktrace,
            )
        )
        run.has_outcome = False
        run.cursor = 1 << 30
        ctx.state.touch_run()
        finish(ctx)
    except Exception:
        logger.exception("could not fail pipeline %s after an engine error", ctx.address_id)


def on_get_request(ctx: Context, action: messages_pb2.ActionRequest) -> None:
    data = ctx.state.cell("request")
    if not data:
        ctx.reply_error(
            action.reply_topic,
            action.reply_id,
            errors.NOT_FOUND_ERROR,
            f"pipeline {action.pipeline_id!r} is unknown",
        )
        return
    reply = messages_pb2.Reply(reply_id=action.reply_id, pipeline_id=action.pipeline_id)
    reply.request.ParseFromString(data)
    ctx.effects.append(effects.SendReply(action.reply_topic, action.pipeline_id, reply))


def on_store_request(ctx: Context, request: messages_pb2.PipelineRequest) -> None:
    """At `<id>~request`: keep a root's original request for `get_request`."""
    ctx.state.set_raw("request", request.SerializeToString())
