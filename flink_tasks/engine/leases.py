"""Leases of long tasks: a worker's `TaskRunning` beat arms a durable deadline; a deadline with
no newer beat is checked through the task-reports topic, and fails the attempt as
`WorkerLostError` only if it comes back with still no newer beat.

Why the round trip: beats travel on the task-reports topic through StateFun's Kafka ingress,
which StateFun stops reading while its calls to the workers are at their limit, so under load a
live worker's beats can be minutes late while the deadline's timer fires on time. The check is
keyed like the beats, so it is read after every beat written before it: a live worker's beat
renews the lease first, a dead worker's never comes. The deadline is re-armed meanwhile, so a
check lost on the way is sent again.

A task bucket's call is answered within the batch wait, so a group's task is leased sooner than
a call of its own would have been. While its beats say so (`redeliverable`), a lost worker gets
the attempt sent again, as StateFun would have delivered its call again, up to
`MAX_REDELIVERIES` times: the batch wait changes when results arrive, not what happens."""

from __future__ import annotations

import logging

from flink_tasks import errors
from flink_tasks._proto import messages_pb2, pipeline_pb2
from flink_tasks.engine import effects, retries, sequence
from flink_tasks.engine.common import FINISHED_STATUSES, task_exception
from flink_tasks.engine.context import Context
from flink_tasks.types import type_name_of

logger = logging.getLogger(__name__)

# what a lost worker's error matches in a retry policy's `retry_for`
WORKER_LOST_NAMES = frozenset(type_name_of(t) for t in errors.WorkerLostError.__mro__)

#: how often a lost batched attempt is sent again before it fails as `WorkerLostError`
MAX_REDELIVERIES = 3


def running_task(
    ctx: Context, task_id: str, attempt: int, invocation: int, slot: int
) -> tuple[pipeline_pb2.TaskEntry, messages_pb2.Run | messages_pb2.Slot] | None:
    """The task entry and the record holding its lease beat, if that attempt is still
    the one running here; None for anything stale."""
    run = ctx.state.run
    if (
        run is None
        or run.parked
        or invocation != run.invocation
        or run.status in FINISHED_STATUSES
        or (run.cancelling and not run.finalizing)
        or not run.entry_started
    ):
        return None
    entries = ctx.definition.pipeline.entries
    if run.cursor >= len(entries) or _runs_its_pipeline(run, task_id):
        return None
    entry = entries[run.cursor]
    if slot == 0:
        if entry.WhichOneof("kind") != "task" or entry.task.task_id != task_id:
            return None
        return (entry.task, run) if attempt == run.attempt else None
    if entry.WhichOneof("kind") != "group" or not 0 < slot <= len(entry.group.chains):
        return None
    head = entry.group.chains[slot - 1].entries[0]
    slots = ctx.state.slots
    if head.WhichOneof("kind") != "task" or head.task.task_id != task_id or slots is None:
        return None
    record = slots.slots[slot - 1]
    if record.done or attempt != max(record.attempt, 1):
        return None
    return head.task, record


def _runs_its_pipeline(run: messages_pb2.Run, task_id: str) -> bool:
    """The task returned a pipeline, which runs as a child (its address ends with `.` + the task
    id, see `sequence.start_orchestrated_child`): the worker is done with it, no lease is due,
    however long the child runs."""
    if not run.active_children:
        return False
    suffix = f".{task_id}"
    return any(child.endswith(suffix) for child in run.active_children)


def on_task_running(ctx: Context, running: messages_pb2.TaskRunning) -> None:
    """A worker holds this attempt past its request-reply call: arm a durable deadline."""
    found = running_task(ctx, running.task_id, running.attempt, running.invocation, running.slot)
    if found is None:
        return
    _, record = found
    if isinstance(record, messages_pb2.Run):
        if running.beat < record.task_beat:
            return
        record.task_beat = running.beat
        ctx.state.touch_run()
    else:
        if running.delivery != record.delivery or running.beat < record.beat:
            return  # a stale beat, or one of a delivery the pipeline gave up on
        record.beat = running.beat
        ctx.state.touch_slots()
    deadline = messages_pb2.TaskDeadline(
        task_id=running.task_id,
        attempt=running.attempt,
        invocation=running.invocation,
        slot=running.slot,
        beat=running.beat,
        lease_ms=running.lease_ms,
        delivery=running.delivery,
        redeliverable=running.redeliverable,
    )
    ctx.send(
        ctx.address_id,
        messages_pb2.PipelineMessage(task_deadline=deadline),
        delay_ms=max(1, running.lease_ms),
    )


def on_task_deadline(ctx: Context, deadline: messages_pb2.TaskDeadline) -> None:
    """No newer beat within the lease: check through the reports' path (and re-arm)."""
    if _still_due(ctx, deadline) is None:
        return
    logger.info(
        "task %s (attempt %d) at %s sent no word for %g s: checking behind its reports",
        deadline.task_id,
        deadline.attempt,
        ctx.address_id,
        deadline.lease_ms / 1000,
    )
    ctx.effects.append(effects.CheckLease(ctx.address_id, deadline))
    ctx.send(
        ctx.address_id,
        messages_pb2.PipelineMessage(task_deadline=deadline),
        delay_ms=max(1, deadline.lease_ms),
    )


def on_task_lease_check(ctx: Context, deadline: messages_pb2.TaskDeadline) -> None:
    """The check came back behind every report written before it, and still no newer beat:
    the worker is gone; the attempt is sent again if it was leased at a batch wait, else it
    fails as lost."""
    task = _still_due(ctx, deadline)
    if task is None:
        return
    # only a group's task is batched (a slot's record keeps its delivery); a report that says
    # otherwise of a task outside a group is not believed
    if deadline.redeliverable and deadline.slot and deadline.delivery < MAX_REDELIVERIES:
        _redeliver(ctx, deadline)
        return
    failure = task_exception(
        deadline.task_id,
        task.task_type,
        errors.WORKER_LOST_ERROR,
        f"the worker running task {task.task_type!r} (attempt {deadline.attempt}) sent no "
        f"word for {deadline.lease_ms / 1000:g} s: its process died or lost its connection"
        + (f" (delivered {deadline.delivery + 1} times)" if deadline.delivery else ""),
    )
    failure.attempts = deadline.attempt
    failure.retryable = task.has_retry_policy and bool(
        set(task.retry_policy.retry_for) & WORKER_LOST_NAMES
    )
    logger.warning(
        "task %s (attempt %d) at %s lost its worker",
        deadline.task_id,
        deadline.attempt,
        ctx.address_id,
    )
    sequence.on_task_result(
        ctx,
        messages_pb2.TaskResult(
            task_id=deadline.task_id,
            error=failure,
            attempt=deadline.attempt,
            invocation=deadline.invocation,
            slot=deadline.slot,
        ),
    )


def _redeliver(ctx: Context, deadline: messages_pb2.TaskDeadline) -> None:
    """The same attempt again, as a new delivery: beats of the lost one no longer count, and
    whichever delivery's result comes first is the attempt's."""
    record = ctx.state.slots.slots[deadline.slot - 1]  # type: ignore[union-attr]
    record.delivery = deadline.delivery + 1
    record.beat = 0
    ctx.state.touch_slots()
    logger.warning(
        "task %s (attempt %d) at %s lost its worker at the batch wait: delivering it again (%d)",
        deadline.task_id,
        deadline.attempt,
        ctx.address_id,
        record.delivery,
    )
    retries.resend(
        ctx,
        messages_pb2.RetryDue(
            task_id=deadline.task_id,
            attempt=deadline.attempt,
            invocation=deadline.invocation,
            slot=deadline.slot,
        ),
        delivery=record.delivery,
    )


def _still_due(ctx: Context, deadline: messages_pb2.TaskDeadline) -> pipeline_pb2.TaskEntry | None:
    """The task, if the deadline's attempt still runs here with no beat newer than its own."""
    found = running_task(
        ctx, deadline.task_id, deadline.attempt, deadline.invocation, deadline.slot
    )
    if found is None:
        return None
    task, record = found
    if isinstance(record, messages_pb2.Run):
        return task if record.task_beat == deadline.beat else None
    fresh = record.beat == deadline.beat and record.delivery == deadline.delivery
    return task if fresh else None
