"""Groups: start chains within the parallelism limit, collect one slot per chain, aggregate."""

from __future__ import annotations

from collections.abc import Sequence

from flink_tasks._proto import messages_pb2, pipeline_pb2, values_pb2
from flink_tasks.engine import events, pauses, retries, schedule, sequence, values
from flink_tasks.engine.common import aggregate, final_error, with_state
from flink_tasks.engine.context import Context


def start_group(ctx: Context, group: pipeline_pb2.GroupEntry) -> None:
    run = ctx.run
    run.next_chain = run.running = run.completed = 0
    run.group_id = group.group_id
    run.group_size = len(group.chains)
    run.group_limit = group.max_parallelism
    run.group_flatten = group.flatten
    run.group_return_exceptions = group.return_exceptions
    run.group_unordered = group.unordered
    run.group_pause_points = any(
        chain.entries and chain.entries[0].task.pause_after for chain in group.chains
    )
    ctx.state.set_slots(messages_pb2.GroupSlots(slots=[messages_pb2.Slot() for _ in group.chains]))
    if not group.chains:
        finish_group(ctx)
        return
    pump_group(ctx)


def pump_group(ctx: Context) -> None:
    """Start chains while the group's parallelism allows; no-op once every chain started."""
    run = ctx.run
    limit = run.group_limit
    chains: Sequence[pipeline_pb2.Pipeline] | None = None
    while (
        not run.paused
        and not run.cancelling
        and run.next_chain < run.group_size
        and (limit <= 0 or run.running < limit)
    ):
        if chains is None:
            chains = ctx.definition.pipeline.entries[run.cursor].group.chains
        start_chain(ctx, run.next_chain, chains[run.next_chain])
        run.next_chain += 1
        run.running += 1
    ctx.state.touch_run()


def start_chain(ctx: Context, index: int, chain: pipeline_pb2.Pipeline) -> None:
    run = ctx.run
    head = chain.entries[0]
    if head.WhichOneof("kind") == "task":
        task = head.task
        timed = schedule.is_timed(task)  # one check on the common path, which is hot
        if timed and schedule.delay_first_start(ctx, task, slot=index + 1):
            return
        args, kwargs = values.entry_args(task, run.input)
        sequence.send_task(
            ctx,
            task,
            args,
            kwargs,
            run.state if run.has_state else None,
            attempt=1,
            slot=index + 1,
            expires_at_ms=schedule.expires_at_ms(ctx, task) if timed else 0,
        )
        return
    child_id = head.child.child_id
    start = messages_pb2.ChildStart(
        parent_id=ctx.address_id,
        root_pipeline_id=run.root_pipeline_id,
        entry_id=child_id,
        input=run.input,
        events_topic=run.events_topic,
        invocation=run.invocation,
        slot=index + 1,
    )
    if run.HasField("trace_context"):
        start.trace_context.CopyFrom(run.trace_context)
    if run.has_state:
        start.state.CopyFrom(run.state)
        start.has_state = True
    run.active_children.append(child_id)
    ctx.send(child_id, messages_pb2.PipelineMessage(start_child=start))


def on_chain_result(ctx: Context, index: int, result: messages_pb2.TaskResult) -> None:
    run = ctx.run
    slots = ctx.state.slots
    assert slots is not None
    slot = slots.slots[index]
    if slot.done or (result.attempt and result.attempt != max(slot.attempt, 1)):
        return  # a duplicate or late result of an attempt already decided
    outcome = result.WhichOneof("outcome")
    if outcome == "pipeline":
        state = result.state if result.has_state else (run.state if run.has_state else None)
        sequence.start_orchestrated_child(ctx, result, state, slot=index + 1)
        return
    if outcome == "error" and result.error.retryable:
        head = ctx.definition.pipeline.entries[run.cursor].group.chains[index].entries[0]
        if head.WhichOneof("kind") == "task" and retries.schedule_retry(
            ctx, head.task, result, result.attempt or 1, slot=index + 1
        ):
            return
    slot.done = True
    if run.group_unordered:
        slot.order = run.completed + 1
    if outcome == "error":
        slot.failed = True
        error = final_error(result.error, result.attempt or 1)
        if not error.has_state and run.has_state:
            error.state.CopyFrom(run.state)
            error.has_state = True
        slot.error.CopyFrom(error)
    else:
        slot.result.CopyFrom(result.result)
        if result.has_state:
            slot.state.CopyFrom(result.state)
            slot.has_state = True
        if result.pause_pipeline or (run.group_pause_points and chain_head_pauses(ctx, index)):
            pauses.reach_pause_point(ctx)  # the other chains go on; no new chain starts
    ctx.state.touch_slots()
    run.running -= 1
    run.completed += 1
    ctx.state.touch_run()
    events.progress(ctx, run.completed)
    if run.completed == run.group_size:
        finish_group(ctx)
    elif run.next_chain < run.group_size:  # chains left to start (else pump_group is a no-op)
        pump_group(ctx)


def chain_head_pauses(ctx: Context, index: int) -> bool:
    chain = ctx.definition.pipeline.entries[ctx.run.cursor].group.chains[index]
    return chain.entries[0].task.pause_after


def finish_group(ctx: Context) -> None:
    run = ctx.run
    slots = ctx.state.slots
    assert slots is not None
    items: list[values_pb2.Value] = []
    failures: list[values_pb2.TaskException] = []
    states: list[values_pb2.Value] = []
    in_result_order: Sequence[messages_pb2.Slot] = slots.slots
    if run.group_unordered:
        in_result_order = sorted(slots.slots, key=lambda slot: slot.order)
    for slot in in_result_order:
        if slot.failed:
            if run.group_return_exceptions:
                items.append(values_pb2.Value(exception=slot.error))
            else:
                failures.append(slot.error)
        elif run.group_flatten and slot.result.WhichOneof("kind") == "list_value":
            items.extend(slot.result.list_value.items)
        else:
            items.append(slot.result)
    for slot in slots.slots:  # states merge in declaration order, whatever the result order
        if slot.has_state:
            states.append(slot.state)
        elif run.has_state:
            states.append(run.state)
    if states:
        run.state.CopyFrom(values.merge_states(states))
        run.has_state = True
    group_id = run.group_id
    pause_after = ctx.definition.pipeline.entries[run.cursor].group.pause_after
    run.group_size = 0
    ctx.state.set_slots(None)
    if failures:
        run.failing = True
        run.error.CopyFrom(with_state(aggregate(group_id, failures), run))
        run.cursor += 1
        run.entry_started = False
        ctx.state.touch_run()
        sequence.start_entry(ctx)
        return
    if pause_after:
        pauses.reach_pause_point(ctx)
    sequence.complete_entry(ctx, values.list_value(items))
