"""The sequence of entries at one address: start the entry at the cursor, apply its result."""

from __future__ import annotations

import logging

from flink_tasks import errors, wire
from flink_tasks._proto import messages_pb2, pipeline_pb2, values_pb2
from flink_tasks.engine import effects, finish, groups, inline, pauses, retries, schedule, values
from flink_tasks.engine.common import (
    FINISHED_STATUSES,
    bucketed,
    entry_task_ids,
    final_error,
    task_address,
    task_exception,
    with_state,
)
from flink_tasks.engine.context import Context
from flink_tasks.engine.task_request import task_request

logger = logging.getLogger(__name__)

SEGMENT = pipeline_pb2.TaskEntry()  # a chain segment's result is handled as a plain task's


def start_entry(ctx: Context) -> None:
    """Start the entry at the cursor, skipping what the current outcome skips."""
    run = ctx.run
    if run.held and pauses.holds(run):  # at a pause point: nothing after it starts, finishing too
        run.entry_started = False
        ctx.state.touch_run()
        return
    entries = ctx.definition.pipeline.entries
    while True:
        if run.cursor >= len(entries):
            ctx.flush_skipped()  # before the terminal status: event readers stop there
            finish.finish(ctx)
            return
        entry = entries[run.cursor]
        kind = (
            entry.task.kind if entry.WhichOneof("kind") == "task" else pipeline_pb2.ENTRY_KIND_TASK
        )
        if kind == pipeline_pb2.ENTRY_KIND_FINALLY:
            if not run.has_outcome:
                run.outcome.CopyFrom(finish.current_outcome(ctx))
                run.has_outcome = True
            run.finalizing = True
            run.failing = False
        elif (
            run.failing
            and kind != pipeline_pb2.ENTRY_KIND_EXCEPTIONALLY
            and not (entry.WhichOneof("kind") == "child" and entry.child.has_exceptionally)
        ):
            ctx.skipped.extend(entry_task_ids(entry))
            run.cursor += 1
            continue
        elif not run.failing and kind == pipeline_pb2.ENTRY_KIND_EXCEPTIONALLY:
            run.cursor += 1  # on success the result passes through
            continue
        break
    ctx.state.touch_run()
    if run.paused and not run.finalizing:
        run.entry_started = False
        return
    run.entry_started = True
    if entry.WhichOneof("kind") == "task":
        start_task_entry(ctx, entry.task)
    elif entry.WhichOneof("kind") == "child":
        start_segment(ctx, entry.child)
    else:
        groups.start_group(ctx, entry.group)


def start_segment(ctx: Context, child: pipeline_pb2.ChildEntry) -> None:
    run = ctx.run
    start = messages_pb2.ChildStart(
        parent_id=ctx.address_id,
        root_pipeline_id=run.root_pipeline_id,
        entry_id=child.child_id,
        input=run.input,
        events_topic=run.events_topic,
        invocation=run.invocation,
        failing=run.failing,
    )
    if run.failing:
        start.error.CopyFrom(run.error)
    if run.HasField("trace_context"):
        start.trace_context.CopyFrom(run.trace_context)
    if run.has_state:
        start.state.CopyFrom(run.state)
        start.has_state = True
    run.task_id = child.child_id
    run.attempt = 1
    run.active_children.append(child.child_id)
    ctx.send(child.child_id, messages_pb2.PipelineMessage(start_child=start))


def sequence_task_args(
    ctx: Context, task: pipeline_pb2.TaskEntry
) -> tuple[values_pb2.ValueList, values_pb2.ValueMap]:
    """Args of a task entry of the sequence: `exceptionally` gets the error first,
    `finally_do` only its own args, any other task the previous result first."""
    run = ctx.run
    if task.kind == pipeline_pb2.ENTRY_KIND_EXCEPTIONALLY:
        args = values_pb2.ValueList()
        args.items.add().exception.CopyFrom(run.error)
        args.items.extend(task.args.items)
        return args, task.kwargs
    if task.kind == pipeline_pb2.ENTRY_KIND_FINALLY:
        return task.args, task.kwargs
    return values.entry_args(task, run.input)


def start_task_entry(ctx: Context, task: pipeline_pb2.TaskEntry) -> None:
    run = ctx.run
    args, kwargs = sequence_task_args(ctx, task)
    run.task_id = task.task_id
    run.attempt = 1
    run.task_beat = 0
    timed = schedule.is_timed(task)
    if timed and schedule.delay_first_start(ctx, task):
        return
    send_task(
        ctx,
        task,
        args,
        kwargs,
        run.state if run.has_state else None,
        attempt=1,
        expires_at_ms=schedule.expires_at_ms(ctx, task) if timed else 0,
    )


def send_task(
    ctx: Context,
    task: pipeline_pb2.TaskEntry,
    args: values_pb2.ValueList,
    kwargs: values_pb2.ValueMap,
    state: values_pb2.Value | None,
    *,
    attempt: int,
    slot: int = 0,
    expires_at_ms: int = 0,
    delivery: int = 0,
) -> None:
    run = ctx.run
    if expires_at_ms and schedule.expired(ctx, task, slot, expires_at_ms):
        return
    namespace = task.namespace or wire.DEFAULT_TASK_NAMESPACE
    served = ctx.settings.served_namespaces
    if served is not None and namespace not in served:
        failure = task_exception(
            task.task_id,
            task.task_type,
            errors.TASK_NOT_FOUND_ERROR,
            f"task {task.task_type!r} is bound to namespace {namespace!r}, which no endpoint "
            f"serves (served: {sorted(served)}); add it to the StateFun module",
        )
        result = messages_pb2.TaskResult(
            task_id=task.task_id, error=failure, invocation=run.invocation, slot=slot
        )
        ctx.send(ctx.address_id, result)
        return
    if ctx.inline is not None and inline.claim(ctx, task, attempt, slot):
        return  # its result came in the same message as the previous step's
    request = task_request(
        task,
        args,
        kwargs,
        pipeline_id=ctx.address_id,
        root_pipeline_id=run.root_pipeline_id,
        attempt=attempt,
        state=state,
        invocation=run.invocation,
        slot=slot,
        expires_at_ms=expires_at_ms,
        trace_context=run.trace_context if run.HasField("trace_context") else None,
    )
    if ctx.settings.inline_chain_steps:
        request.inline_next.extend(inline.plan(ctx, task, slot))
    # a group with a max_parallelism releases its tasks one result at a time: nothing would be
    # packed, and a bucket would queue a released task behind its neighbour's call
    buckets = 0 if run.group_limit else ctx.settings.task_buckets
    request.batched = bucketed(ctx.address_id, slot, buckets)
    request.delivery = delivery
    ctx.effects.append(
        effects.SendTask(
            namespace,
            task.worker_name or wire.DEFAULT_WORKER_NAME,
            task_address(task.task_id, attempt, ctx.address_id, slot, buckets),
            request,
        )
    )


def on_task_result(ctx: Context, result: messages_pb2.TaskResult) -> None:
    run = ctx.state.run
    if (
        run is None
        or run.parked
        or result.invocation != run.invocation
        or run.status in FINISHED_STATUSES
    ):
        logger.debug("ignoring a stale result for %s at %s", result.task_id, ctx.address_id)
        return
    if run.cancelling and not run.finalizing:
        return  # results of running tasks are ignored once cancelled
    _forget_child(run, result.task_id)
    if result.slot > 0:
        # a chain of the running group: no need to look at the definition
        if run.entry_started and result.slot <= run.group_size:
            groups.on_chain_result(ctx, result.slot - 1, result)
        return
    entries = ctx.definition.pipeline.entries
    if run.cursor >= len(entries) or not run.entry_started or result.task_id != run.task_id:
        return
    if result.attempt and result.attempt != run.attempt:
        return  # a duplicate or late result of an attempt already decided
    entry = entries[run.cursor]
    if entry.WhichOneof("kind") == "task":
        on_task_entry_result(ctx, entry.task, result)
    elif entry.WhichOneof("kind") == "child":
        on_task_entry_result(ctx, SEGMENT, result)


def on_task_entry_result(
    ctx: Context, task: pipeline_pb2.TaskEntry, result: messages_pb2.TaskResult
) -> None:
    run = ctx.run
    outcome = result.WhichOneof("outcome")
    if outcome == "pipeline":
        if result.has_state:
            run.state.CopyFrom(result.state)
            run.has_state = True
        start_orchestrated_child(ctx, result, run.state if run.has_state else None)
        return
    if outcome == "error":
        if retries.schedule_retry(ctx, task, result, result.attempt or run.attempt):
            return
        run.failing = True
        run.error.CopyFrom(
            with_state(final_error(result.error, result.attempt or run.attempt), run)
        )
    else:
        if result.has_state:
            run.state.CopyFrom(result.state)
            run.has_state = True
        if run.finalizing:
            run.cursor += 1
            start_entry(ctx)
            return
        run.failing = False
        run.ClearField("error")
        value = values.none_value() if task.not_fruitful else result.result
        run.input.Clear()
        run.input.has_previous = True
        run.input.previous.CopyFrom(value)
        if task.pause_after or result.pause_pipeline:
            pauses.reach_pause_point(ctx)
    if run.finalizing and outcome == "error":
        run.outcome.Clear()
        run.outcome.error.CopyFrom(run.error)
    run.cursor += 1
    run.entry_started = False
    ctx.state.touch_run()
    start_entry(ctx)


def complete_entry(ctx: Context, value: values_pb2.Value) -> None:
    run = ctx.run
    run.input.Clear()
    run.input.has_previous = True
    run.input.previous.CopyFrom(value)
    run.cursor += 1
    run.entry_started = False
    ctx.state.touch_run()
    start_entry(ctx)


def start_orchestrated_child(
    ctx: Context, result: messages_pb2.TaskResult, state: values_pb2.Value | None, *, slot: int = 0
) -> None:
    """A task returned a pipeline: run it as a child whose result becomes the task's result."""
    run = ctx.run
    pipeline = result.pipeline
    child_id = f"{ctx.new_child_id(run)}.{result.task_id}"
    start = messages_pb2.ChildStart(
        parent_id=ctx.address_id,
        root_pipeline_id=run.root_pipeline_id,
        entry_id=result.task_id,
        pipeline=pipeline,
        has_pipeline=True,
        events_topic=run.events_topic,
        invocation=run.invocation,
        paused=run.paused,
        slot=slot,
    )
    start.input.initial.CopyFrom(pipeline.initial)
    # the child's tasks are children of the span of the task that returned the pipeline
    if result.HasField("trace_context"):
        start.trace_context.CopyFrom(result.trace_context)
    elif run.HasField("trace_context"):
        start.trace_context.CopyFrom(run.trace_context)
    if pipeline.inline:
        if state is not None:
            start.state.CopyFrom(state)
            start.has_state = True
    elif pipeline.initial.has_state:
        start.state.CopyFrom(pipeline.initial.state)
        start.has_state = True
    # the child's address, so that pause, unpause and cancel reach it; its result comes back
    # under the task's id, which the address ends with (see `_forget_child`)
    run.active_children.append(child_id)
    ctx.state.touch_run()
    ctx.send(child_id, messages_pb2.PipelineMessage(start_child=start))


def _forget_child(run: messages_pb2.Run, entry_id: str) -> None:
    """A child's result came: it no longer takes control messages. A child is listed by its
    address, which is its entry id, or (a pipeline a task returned) ends with `.` + the task id."""
    if not run.active_children:
        return  # the common case: a task's result
    suffix = f".{entry_id}"
    for child in run.active_children:
        if child == entry_id or child.endswith(suffix):
            run.active_children.remove(child)
            return


def on_child_result(ctx: Context, result: messages_pb2.TaskResult) -> None:
    """A child pipeline finished: its result is its entry's result, as a task's."""
    on_task_result(ctx, result)
