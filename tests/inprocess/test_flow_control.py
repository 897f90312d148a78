"""Unordered groups, pause points and delayed starts, through the real pipeline and task
functions in memory (docs/semantics.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from flink_tasks import (
    PipelineBuilder,
    PipelineCancelledError,
    PipelineDefinitionError,
    PipelineStatus,
    TaskError,
    TaskException,
    in_parallel,
    wire,
)
from flink_tasks.testing import PipelineEnvironment
from tests import pipelines as t

MS = timedelta(milliseconds=1)

# ---------------------------------------------------------------- unordered groups


async def test_unordered_group_returns_results_in_completion_order(
    env: PipelineEnvironment,
) -> None:
    chains = [t.sleep_async.send(0.2 * (3 - i), i) for i in range(4)]
    assert await env.submit_async(in_parallel(chains, ordered=False)) == [3, 2, 1, 0]
    ordered = [t.sleep_async.send(0.05 * (3 - i), i) for i in range(4)]
    assert await env.submit_async(in_parallel(ordered)) == [0, 1, 2, 3]


async def test_unordered_group_with_return_exceptions(env: PipelineEnvironment) -> None:
    pipeline = in_parallel(
        [t.sleep_async.send(0.3, "slow"), t.fail.send("fast")],
        ordered=False,
        return_exceptions=True,
    )
    first, second = await env.submit_async(pipeline)
    assert isinstance(first, TaskException) and first.exception_message == "fast"
    assert second == "slow"


async def test_unordered_group_fails_as_an_ordered_one(env: PipelineEnvironment) -> None:
    pipeline = in_parallel([t.echo.send(1), t.fail.send("x")], ordered=False)
    with pytest.raises(TaskError) as caught:
        await env.submit_async(pipeline)
    assert caught.value.exception_type == "flink_tasks.AggregatedError"


async def test_unordered_staged_group_orders_within_and_across_stages(
    env: PipelineEnvironment,
) -> None:
    # stage 0 holds chains 0 and 1 (slow), stage 1 chains 2 and 3 (fast): stage 1 completes first
    delays = [0.5, 0.35, 0.15, 0.0]
    chains = [t.sleep_async.send(d, i) for i, d in enumerate(delays)]
    pipeline = in_parallel(chains, num_stages=2, ordered=False)
    assert await env.submit_async(pipeline) == [3, 2, 1, 0]


async def test_unordered_group_keeps_max_parallelism_and_every_result_once(
    env: PipelineEnvironment,
) -> None:
    t.reset_concurrency_probe()
    chains = [t.probe.send(i, 0.01) for i in range(40)]
    pipeline = in_parallel(chains, max_parallelism=3, ordered=False)
    result = await env.submit_async(pipeline)
    assert sorted(result) == list(range(40))
    assert t.concurrency_probe()[0] <= 3


async def test_unordered_group_merges_states_in_declaration_order(
    env: PipelineEnvironment,
) -> None:
    pipeline = in_parallel(
        [
            t.sleep_async.send(0.3)
            .continue_with(t.update_state, "A", 1)
            .continue_with(t.update_state, "B", 1),
            t.update_state.send("A", 2),
        ],
        ordered=False,
    ).continue_with(t.get_state)
    assert await env.submit_async(pipeline) == {"A": 1, "B": 1}


async def _state_cost(size: int, ordered: bool) -> tuple[float, int]:
    """(state bytes shipped per result, the most shipped in one call) of one group."""
    async with PipelineEnvironment.in_process(t.tasks, inline_wait=timedelta(hours=1)) as env:
        pipeline = in_parallel(
            [t.multiply.send(i) for i in range(size)], ordered=ordered
        ).with_initial(args=2)
        result = await env.submit_async(pipeline, timeout=timedelta(minutes=2))
        assert sorted(result) == [2 * i for i in range(size)]
        assert env.runtime is not None
        stats = [
            s
            for (typename, _), s in env.runtime.stats.items()
            if typename == wire.PIPELINE_FUNCTION
        ]
        return sum(s.state_bytes for s in stats) / size, max(s.max_state_bytes for s in stats)


async def test_unordered_group_costs_what_an_ordered_one_costs_per_result() -> None:
    ordered = await _state_cost(200, True)
    unordered = await _state_cost(200, False)
    larger = await _state_cost(800, False)
    print(f"state per result / largest call: ordered {ordered}, unordered {unordered}, x4 {larger}")
    # how results batch into calls varies from run to run, and with it the bytes shipped per
    # result; the largest call is what must not grow (exact slot sizes: tests/unit/engine)
    assert unordered[1] <= 1.25 * ordered[1]
    assert larger[1] <= 1.25 * unordered[1]


# ---------------------------------------------------------------- pause points


@pytest.mark.parametrize(
    ("build", "result", "recorded"),
    [
        pytest.param(
            lambda: t.echo.send(1)
            .wait()
            .continue_with(t.record, "after")
            .continue_with(t.echo, "x"),
            (None, "x"),
            [(1, "after")],
            id="after_a_task",
        ),
        pytest.param(
            lambda: in_parallel([t.echo.send(1), t.echo.send(2)])
            .wait()
            .continue_with(t.record, "after"),
            None,
            [([1, 2], "after")],
            id="after_a_group",
        ),
        pytest.param(
            lambda: in_parallel([t.echo.send(i) for i in range(250)])
            .wait()
            .continue_with(t.record, "after"),
            None,
            [(list(range(250)), "after")],
            id="after_a_large_staged_group",
        ),
        pytest.param(
            lambda: t.pause_after_me.send(5).continue_with(t.record, "after"),
            None,
            [(5, "after")],
            id="asked_for_by_the_task_through_its_context",
        ),
    ],
)
async def test_a_pause_point_holds_what_follows_and_unpause_continues(
    env: PipelineEnvironment,
    build: Callable[[], PipelineBuilder[Any]],
    result: Any,
    recorded: list[Any],
) -> None:
    t.recorded.clear()
    pipeline = build()
    future = asyncio.ensure_future(env.submit_async(pipeline))
    await _wait_for_status(env, pipeline.id, PipelineStatus.PAUSED)
    await _settled(env)
    assert t.recorded == [] and not future.done()
    assert await env.unpause(pipeline.id) == PipelineStatus.RUNNING
    assert await future == result
    assert t.recorded == recorded


async def test_wait_after_the_last_entry_holds_the_result(env: PipelineEnvironment) -> None:
    pipeline = t.echo.send(7).wait()
    future = asyncio.ensure_future(env.submit_async(pipeline))
    await _wait_for_status(env, pipeline.id, PipelineStatus.PAUSED)
    await _settled(env)
    assert not future.done()
    await env.unpause(pipeline.id)
    assert await future == 7
    assert await env.get_status(pipeline.id) == PipelineStatus.COMPLETED


async def test_wait_inside_a_nested_pipeline_pauses_the_whole_pipeline(
    env: PipelineEnvironment,
) -> None:
    t.recorded.clear()
    nested = t.echo.send("a").continue_with(t.echo, "b").wait().continue_with(t.record, "nested")
    pipeline = in_parallel([nested, t.echo.send("other")]).continue_with(t.record, "outer")
    future = asyncio.ensure_future(env.submit_async(pipeline))
    await _wait_for_status(env, pipeline.id, PipelineStatus.PAUSED)
    await _settled(env)
    assert t.recorded == [] and not future.done()
    await env.unpause(pipeline.id)
    await future
    assert t.recorded == [("a", "b", "nested"), ([None, "other"], "outer")]


async def test_a_pause_point_in_a_group_lets_running_chains_finish_and_starts_no_more(
    env: PipelineEnvironment,
) -> None:
    t.reset_concurrency_probe()
    gate = f"pause-{time.monotonic_ns()}"
    chains = [t.echo.send(1).wait(), t.at_gate.send(gate, 2), t.probe.send(3, 0.0)]
    pipeline = in_parallel(chains, max_parallelism=2)
    future = asyncio.ensure_future(env.submit_async(pipeline))
    await _wait_for_status(env, pipeline.id, PipelineStatus.PAUSED)
    t.gate(gate).set()  # the running chain goes on while paused ...
    await _settled(env)
    assert t.concurrency_probe()[1] == [] and not future.done()  # ... and no new chain starts
    await env.unpause(pipeline.id)
    assert await future == [1, 2, 3]


async def test_cancel_at_a_pause_point_runs_finally(env: PipelineEnvironment) -> None:
    t.recorded.clear()
    pipeline = (
        t.echo.send(1).wait().continue_with(t.record, "never").finally_do(t.record, "finally")
    )
    future = asyncio.ensure_future(env.submit_async(pipeline))
    await _wait_for_status(env, pipeline.id, PipelineStatus.PAUSED)
    await env.cancel(pipeline.id)
    with pytest.raises(PipelineCancelledError):
        await future
    assert t.recorded == [("finally",)]


def test_wait_is_checked_when_built() -> None:
    with pytest.raises(PipelineDefinitionError):
        t.echo.send(1).finally_do(t.record).wait()
    assert t.echo.send(1).wait().to_proto().entries[0].task.pause_after


# ---------------------------------------------------------------- delayed starts


async def test_countdown_delays_the_start(env: PipelineEnvironment) -> None:
    submitted = time.time()
    started = await env.submit_async(t.started_at.send().set(countdown=300 * MS))
    assert started - submitted >= 0.3


async def test_eta_delays_the_start(env: PipelineEnvironment) -> None:
    eta = datetime.now().astimezone() + timedelta(milliseconds=300)
    started = await env.submit_async(t.started_at.send().set(eta=eta))
    assert started >= eta.timestamp()
    past = datetime.now().astimezone() - timedelta(hours=1)
    assert await env.submit_async(t.echo.send(1).set(eta=past)) == 1


async def test_countdown_of_a_group_chain_and_a_later_entry(env: PipelineEnvironment) -> None:
    submitted = time.time()
    group = in_parallel([t.started_at.send().set(countdown=300 * MS), t.started_at.send()])
    late, early = await env.submit_async(group)
    assert late - submitted >= 0.3 and early - submitted < 0.3
    pipeline = t.echo.send(1).continue_with(t.started_at).set(countdown=200 * MS)
    submitted = time.time()
    assert await env.submit_async(pipeline) - submitted >= 0.2


async def test_expires_before_the_countdown_fails_at_once(env: PipelineEnvironment) -> None:
    pipeline = t.echo.send(1).set(countdown=timedelta(hours=1), expires=100 * MS)
    with pytest.raises(TaskError) as caught:
        await env.submit_async(pipeline, timeout=timedelta(seconds=5))
    assert caught.value.exception_type == "flink_tasks.TaskExpiredError"
    assert "expires" in caught.value.exception_message


async def test_expires_lets_a_timely_task_run(env: PipelineEnvironment) -> None:
    pipeline = t.echo.send(1).set(countdown=50 * MS, expires=timedelta(minutes=1))
    assert await env.submit_async(pipeline) == 1
    assert await env.submit_async(t.echo.send(2).set(expires=timedelta(minutes=1))) == 2


async def test_paused_past_its_expiry_a_delayed_task_fails_and_exceptionally_sees_it(
    env: PipelineEnvironment,
) -> None:
    expires = datetime.now().astimezone() + timedelta(milliseconds=300)
    pipeline = (
        t.echo.send(1)
        .set(countdown=100 * MS, expires=expires)
        .exceptionally(t.handle_error, "handled")
    )
    future = asyncio.ensure_future(env.submit_async(pipeline))
    await _wait_for_status(env, pipeline.id, PipelineStatus.RUNNING)
    await env.pause(pipeline.id)
    await _until(lambda: time.time() > expires.timestamp() + 0.05, seconds=5)
    await env.unpause(pipeline.id)
    handled, exception_type, message, _ = await future
    assert (handled, exception_type) == ("handled", "flink_tasks.TaskExpiredError")
    assert "could not start before it expired" in message


async def test_pause_and_unpause_while_waiting_on_a_countdown(env: PipelineEnvironment) -> None:
    t.recorded.clear()
    pipeline = t.record.send("started").set(countdown=200 * MS)
    future = asyncio.ensure_future(env.submit_async(pipeline))
    await _wait_for_status(env, pipeline.id, PipelineStatus.RUNNING)
    assert await env.pause(pipeline.id) == PipelineStatus.PAUSED
    due = time.time() + 0.25
    await _until(lambda: time.time() > due, seconds=5)
    await _settled(env)
    assert t.recorded == [] and not future.done()  # the countdown fell due while paused
    await env.unpause(pipeline.id)
    assert await future is None
    assert t.recorded == [("started",)]


async def test_cancel_while_waiting_on_a_countdown(env: PipelineEnvironment) -> None:
    t.recorded.clear()
    pipeline = t.record.send("never").set(countdown=200 * MS).finally_do(t.record, "finally")
    future = asyncio.ensure_future(env.submit_async(pipeline))
    await _wait_for_status(env, pipeline.id, PipelineStatus.RUNNING)
    await env.cancel(pipeline.id)
    with pytest.raises(PipelineCancelledError):
        await future
    due = time.time() + 0.25
    await _until(lambda: time.time() > due, seconds=5)
    await _settled(env)
    assert t.recorded == [("finally",)]


def test_timing_options_are_checked_when_built() -> None:
    for bad in ({"countdown": 5}, {"countdown": -MS}, {"eta": 3.0}, {"expires": -MS}):
        with pytest.raises(PipelineDefinitionError):
            t.echo.send(1).set(**bad)
    with pytest.raises(PipelineDefinitionError):
        in_parallel([t.echo.send(1)]).set(countdown=MS)


# ---------------------------------------------------------------- helpers


async def _wait_for_status(env: PipelineEnvironment, pipeline_id: str, status: object) -> None:
    for _ in range(500):
        if await env.get_status(pipeline_id) == status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{pipeline_id} never reached {status}")


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.01)


async def _settled(env: PipelineEnvironment) -> None:
    assert env.runtime is not None
    await env.runtime.settled()
