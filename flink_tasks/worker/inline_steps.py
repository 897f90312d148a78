"""The worker's side of inlined chain steps (`EngineSettings.inline_chain_steps`): run a task,
then the next steps its request lists while each succeeds, and answer once with every result.
Each step is run as a request of its own (hooks, metrics, timeout, pool), built by the engine's
rule (`flink_tasks.engine.inline.next_request`)."""

from __future__ import annotations

from collections.abc import Callable

from flink_tasks._proto import messages_pb2
from flink_tasks.engine import inline
from flink_tasks.worker.attempts import RunTask


def chained(run_one: RunTask) -> RunTask:
    """`run_one` for a request with `inline_next`: the first result carries the others'."""

    async def run_chain(
        request: messages_pb2.TaskRequest, on_start: Callable[[], None]
    ) -> messages_pb2.TaskResult:
        first = last = await run_one(request, on_start)
        previous = request
        for task in request.inline_next:
            if not inline.continues(last):
                break
            following = inline.next_request(previous, last, task)
            last = await run_one(following, on_start)
            first.inlined.append(last)
            previous = following
        return first

    return run_chain
