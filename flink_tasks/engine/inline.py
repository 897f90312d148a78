"""Inlined chain steps (`EngineSettings.inline_chain_steps`, opt-in).

Without it every step of a chain costs two remote calls and two trips through Flink: the task
function answers the pipeline function, which sends the next task. With it, the request of a task
also lists the next entries of the same sequence that the same worker serves (`plan`); the
worker runs them one after another while each succeeds, building each request with
`next_request` (the engine's own argument and state rules), and answers once with every result.
`on_task_result` applies those results in order, exactly as if they had come one by one: a result
is applied only when the engine itself would have sent that step (`claim`), so a failure, a
retry, `exceptionally`, `finally_do` and every event follow the normal path.

Eligible steps (kept small on purpose): plain task entries of the address's own sequence, not in
a group, with no `.wait()`, countdown, eta or expiry, at the same namespace and worker name as the
task before them, while the run is neither failing, finishing, paused nor cancelling. A step that
returns a pipeline or asks for a pause ends the inlined run; the engine takes over from there.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from flink_tasks._proto import messages_pb2, pipeline_pb2
from flink_tasks.engine import schedule, values
from flink_tasks.engine.context import Context
from flink_tasks.engine.task_request import task_request

logger = logging.getLogger(__name__)


def _plain(task: pipeline_pb2.TaskEntry) -> bool:
    return (
        task.kind == pipeline_pb2.ENTRY_KIND_TASK
        and not task.pause_after
        and not schedule.is_timed(task)
    )


def plan(ctx: Context, task: pipeline_pb2.TaskEntry, slot: int) -> list[pipeline_pb2.TaskEntry]:
    """The entries after the cursor that the worker may run right after `task` in its call."""
    limit = ctx.settings.inline_chain_steps
    run = ctx.run
    if (
        slot
        or not _plain(task)
        or run.failing
        or run.finalizing
        or run.paused
        or run.held
        or run.cancelling
    ):
        return []
    entries = ctx.definition.pipeline.entries
    if run.cursor >= len(entries) or entries[run.cursor].task.task_id != task.task_id:
        return []
    steps: list[pipeline_pb2.TaskEntry] = []
    for entry in entries[run.cursor + 1 : run.cursor + 1 + limit]:
        if entry.WhichOneof("kind") != "task":
            break
        following = entry.task
        if (
            not _plain(following)
            or following.namespace != task.namespace
            or following.worker_name != task.worker_name
        ):
            break
        steps.append(following)
    return steps


def continues(result: messages_pb2.TaskResult) -> bool:
    """Whether the worker may run the next inlined step after `result`: only after a plain
    success (an error, a returned pipeline or a pause request goes back to the engine)."""
    return result.WhichOneof("outcome") == "result" and not result.pause_pipeline


def next_request(
    previous: messages_pb2.TaskRequest,
    result: messages_pb2.TaskResult,
    task: pipeline_pb2.TaskEntry,
) -> messages_pb2.TaskRequest:
    """The request for the first attempt of `task` after `previous` succeeded with `result`: what
    the engine would send (`sequence.on_task_entry_result` then `sequence.start_task_entry`)."""
    entry_input = messages_pb2.EntryInput(has_previous=True)
    entry_input.previous.CopyFrom(values.none_value() if previous.not_fruitful else result.result)
    args, kwargs = values.entry_args(task, entry_input)
    # a task bound with_state hands its new state on; any other passes the state it got
    state = result.state if result.has_state else previous.state
    has_state = result.has_state or previous.has_state
    return task_request(
        task,
        args,
        kwargs,
        pipeline_id=previous.pipeline_id,
        root_pipeline_id=previous.root_pipeline_id,
        attempt=1,
        state=state if has_state else None,
        invocation=previous.invocation,
        trace_context=previous.trace_context if previous.HasField("trace_context") else None,
    )


class Pending:
    """The inlined results of one message not applied yet; `claimed`: the engine has just
    reached the step whose result is next, instead of sending it."""

    __slots__ = ("claimed", "results")

    def __init__(self, results: list[messages_pb2.TaskResult]) -> None:
        self.results = deque(results)
        self.claimed = False


def claim(ctx: Context, task: pipeline_pb2.TaskEntry, attempt: int, slot: int) -> bool:
    """True if the result of this send is among the inlined results: do not send it."""
    pending = ctx.inline
    if (
        pending is None
        or not pending.results
        or slot
        or attempt != 1
        or pending.results[0].task_id != task.task_id
    ):
        return False
    pending.claimed = True
    return True


Handler = Callable[[Context, messages_pb2.TaskResult], None]


def with_inlined(on_result: Handler) -> Handler:
    """The `task_result` handler: `on_result`, then each inlined result the engine claims."""

    def on_task_result(ctx: Context, result: messages_pb2.TaskResult) -> None:
        if not result.inlined:
            on_result(ctx, result)
            return
        pending = ctx.inline = Pending(list(result.inlined))
        try:
            on_result(ctx, result)
            while pending.claimed:
                pending.claimed = False
                on_result(ctx, pending.results.popleft())
        finally:
            ctx.inline = None
        if pending.results:
            logger.debug(
                "%d inlined results at %s not applied (the run no longer expected them)",
                len(pending.results),
                ctx.address_id,
            )

    return on_task_result
