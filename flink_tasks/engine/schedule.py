"""Delayed first starts (`.set(countdown=)`, `.set(eta=)`) and start deadlines (`expires=`).

A delayed start is a durable StateFun delayed message to the pipeline's own address: the
`retry_due` of attempt 1, so that pause (held until unpause) and cancel (ignored) treat it as
they treat a retry. It survives a restart like any StateFun delayed message.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from flink_tasks import errors
from flink_tasks._proto import messages_pb2, pipeline_pb2
from flink_tasks.engine.common import task_exception
from flink_tasks.engine.context import Context

logger = logging.getLogger(__name__)


def is_timed(task: pipeline_pb2.TaskEntry) -> bool:
    """True if the task has a countdown, an eta or an expiry."""
    return bool(task.countdown_ms or task.eta_ms or task.expires_in_ms or task.expires_at_ms)


def expires_at_ms(ctx: Context, task: pipeline_pb2.TaskEntry) -> int:
    """When the task's first attempt must have started by (0: never), its entry reached now."""
    if not task.expires_in_ms:
        return task.expires_at_ms
    relative = ctx.now_ms() + task.expires_in_ms
    return min(relative, task.expires_at_ms) if task.expires_at_ms else relative


def delay_first_start(ctx: Context, task: pipeline_pb2.TaskEntry, *, slot: int = 0) -> bool:
    """Schedule the delayed first start of `task` if it has one; False: start it now."""
    if not task.countdown_ms and not task.eta_ms:
        return False
    now = ctx.now_ms()
    due = max(now + task.countdown_ms, task.eta_ms)
    if due <= now:
        return False
    expires = expires_at_ms(ctx, task)
    if expires and due > expires:
        fail_expired(
            ctx,
            task,
            slot,
            f"task {task.task_type!r} ({task.task_id}) would start at {_when(due)}, after it "
            f"expires at {_when(expires)}; its countdown/eta is later than its expires",
        )
        return True
    start = messages_pb2.RetryDue(
        task_id=task.task_id,
        attempt=1,
        invocation=ctx.run.invocation,
        slot=slot,
        expires_at_ms=expires,
    )
    ctx.send(ctx.address_id, messages_pb2.PipelineMessage(retry_due=start), delay_ms=due - now)
    logger.info("task %s starts in %d ms", task.task_id, due - now)
    return True


def expired(ctx: Context, task: pipeline_pb2.TaskEntry, slot: int, deadline_ms: int) -> bool:
    """Fail the task (and return True) if it is past the time it had to start by."""
    if not deadline_ms:
        return False
    now = ctx.now_ms()
    if now <= deadline_ms:
        return False
    fail_expired(
        ctx,
        task,
        slot,
        f"task {task.task_type!r} ({task.task_id}) could not start before it expired at "
        f"{_when(deadline_ms)} ({now - deadline_ms} ms late)",
    )
    return True


def fail_expired(ctx: Context, task: pipeline_pb2.TaskEntry, slot: int, message: str) -> None:
    failure = task_exception(task.task_id, task.task_type, errors.TASK_EXPIRED_ERROR, message)
    failure.attempts = 1
    result = messages_pb2.TaskResult(
        task_id=task.task_id, error=failure, invocation=ctx.run.invocation, slot=slot, attempt=1
    )
    ctx.send(ctx.address_id, result)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")
