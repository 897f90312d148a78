"""Durable retries: a delayed `retry_due` message per attempt, held while paused."""

from __future__ import annotations

import logging

from flink_tasks._proto import messages_pb2, pipeline_pb2
from flink_tasks.engine import sequence, values
from flink_tasks.engine.common import FINISHED_STATUSES
from flink_tasks.engine.context import Context
from flink_tasks.types import retry_delay_ms

logger = logging.getLogger(__name__)


def schedule_retry(
    ctx: Context,
    task: pipeline_pb2.TaskEntry,
    result: messages_pb2.TaskResult,
    attempt: int,
    *,
    slot: int = 0,
) -> bool:
    """Schedule a durable retry if the task's policy allows one more attempt."""
    if not (
        task.has_retry_policy
        and result.error.retryable
        and attempt <= task.retry_policy.max_retries
    ):
        return False
    run = ctx.run
    # from now on only the next attempt's result counts
    if slot:
        record = ctx.state.slots.slots[slot - 1]  # type: ignore[union-attr]
        record.attempt = attempt + 1
        record.beat = record.delivery = 0  # the next attempt's beats count from its first
        ctx.state.touch_slots()
    else:
        run.attempt = attempt + 1
        run.task_beat = 0
        ctx.state.touch_run()
    delay = retry_delay_ms(task.retry_policy, attempt)
    due = messages_pb2.RetryDue(
        task_id=task.task_id, attempt=attempt + 1, invocation=run.invocation, slot=slot
    )
    ctx.send(ctx.address_id, messages_pb2.PipelineMessage(retry_due=due), delay_ms=delay)
    logger.warning("task %s failed (attempt %d); retrying in %d ms", task.task_id, attempt, delay)
    return True


def on_retry_due(ctx: Context, due: messages_pb2.RetryDue) -> None:
    run = ctx.state.run
    if (
        run is None
        or due.invocation != run.invocation
        or run.status in FINISHED_STATUSES
        or run.cancelling
    ):
        return
    if run.paused:
        run.pending_retries.append(due)
        ctx.state.touch_run()
        return
    resend(ctx, due)


def resend(ctx: Context, due: messages_pb2.RetryDue, *, delivery: int = 0) -> None:
    """Send attempt `due.attempt` of the current entry's task (or of a group chain's head)."""
    run = ctx.run
    entries = ctx.definition.pipeline.entries
    if run.cursor >= len(entries):
        return
    entry = entries[run.cursor]
    if entry.WhichOneof("kind") == "task":
        task = entry.task
        if task.task_id != due.task_id:
            return
        args, kwargs = sequence.sequence_task_args(ctx, task)
        run.attempt = due.attempt
        ctx.state.touch_run()
    else:
        if due.slot < 1 or due.slot > len(entry.group.chains):
            return
        task = entry.group.chains[due.slot - 1].entries[0].task
        if task.task_id != due.task_id:
            return
        args, kwargs = values.entry_args(task, run.input)
    sequence.send_task(
        ctx,
        task,
        args,
        kwargs,
        run.state if run.has_state else None,
        attempt=due.attempt,
        slot=due.slot,
        expires_at_ms=due.expires_at_ms,
        delivery=delivery,
    )
