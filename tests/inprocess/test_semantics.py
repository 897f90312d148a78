"""Every behaviour of SEMANTICS.md, through the real pipeline and task functions, in memory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from flink_tasks import (
    PipelineDefinitionError,
    PipelineStatus,
    TaskError,
    TaskException,
    in_parallel,
)
from flink_tasks.pipeline import TaskCall
from flink_tasks.records import RequestedTask, SubmittedPipeline
from flink_tasks.testing import PipelineEnvironment
from tests import pipelines as t

# ---------------------------------------------------------------- arguments between steps


async def test_continuation_passes_result_first(env: PipelineEnvironment) -> None:
    assert await env.submit_async(t.multiply.send(3, 2).continue_with(t.divide, 2)) == 3


async def test_previous_result_comes_before_own_args(env: PipelineEnvironment) -> None:
    assert await env.submit_async(t.echo.send("1").continue_with(t.echo, "a")) == ("1", "a")
    assert await env.submit_async(t.echo.send(1, 2).continue_with(t.echo, 3)) == (1, 2, 3)


async def test_tuple_result_spreads_and_list_does_not(env: PipelineEnvironment) -> None:
    assert await env.submit_async(t.echo.send(1, 2).continue_with(t.add)) == 3
    assert await env.submit_async(t.make_list.send(1, 2).continue_with(t.echo)) == [1, 2]
    assert await env.submit_async(t.make_list.send(1, 2).continue_with(t.echo, 3)) == ([1, 2], 3)


async def test_with_initial_args_kwargs_and_state(env: PipelineEnvironment) -> None:
    assert await env.submit_async(t.multiply.send(5).with_initial(args=2)) == 10
    assert await env.submit_async(t.echo.send(1).with_initial(args=(7, 8))) == (7, 8, 1)
    pipeline = t.echo.send(1, b=2).with_initial(kwargs={"a": 0, "b": 0})
    assert await env.submit_async(pipeline) == (1, {"a": 0, "b": 2})
    assert await env.submit_async(t.get_state.send().with_initial(state={"s": 1})) == {"s": 1}


async def test_with_initial_reaches_every_chain_head_of_a_first_group(
    env: PipelineEnvironment,
) -> None:
    pipeline = in_parallel([t.multiply.send(1), t.multiply.send(2), t.echo.send(3)]).with_initial(
        args=10
    )
    assert await env.submit_async(pipeline) == [10, 20, (10, 3)]


async def test_sync_and_async_tasks_and_generators(env: PipelineEnvironment) -> None:
    assert await env.submit_async(t.async_add.send(1, 2)) == 3
    assert await env.submit_async(t.count_up.send(4)) == [0, 1, 2, 3]


async def test_sync_tasks_do_not_block_the_event_loop(env: PipelineEnvironment) -> None:
    started = time.perf_counter()
    result = await env.submit_async(in_parallel([t.sleep_sync.send(0.4, i) for i in range(4)]))
    assert result == [0, 1, 2, 3]
    assert time.perf_counter() - started < 1.2  # 4 x 0.4 s one after another would be 1.6 s


async def test_not_fruitful_gives_none_downstream_per_entry(env: PipelineEnvironment) -> None:
    assert await env.submit_async(t.not_fruitful.send(1).continue_with(t.echo, "x")) == (None, "x")
    assert await env.submit_async(t.multiply.send(2, 3).set(is_fruitful=False)) is None
    assert await env.submit_async(t.not_fruitful.send(1).set(is_fruitful=True)) == "ignored"


async def test_task_context(env: PipelineEnvironment) -> None:
    pipeline = t.who_am_i.send()
    result = await env.submit_async(pipeline)
    assert result["attempt"] == 1 and result["task_id"] == pipeline.entries[0].task_id  # type: ignore[union-attr]


# ---------------------------------------------------------------- groups


async def test_group_results_in_declaration_order(env: PipelineEnvironment) -> None:
    pipeline = in_parallel([t.sleep_async.send(0.05 * (5 - i), i) for i in range(5)])
    assert await env.submit_async(pipeline) == [0, 1, 2, 3, 4]


async def test_seed_fan_out_fan_in_and_nesting(env: PipelineEnvironment) -> None:
    assert await env.submit_async(in_parallel([t.multiply.send(3, 2), t.multiply.send(4, 5)])) == [
        6,
        20,
    ]
    fan_in = in_parallel([t.multiply.send(3, 2), t.multiply.send(4, 5)]).continue_with(t.average)
    assert await env.submit_async(fan_in) == 13
    nested = in_parallel(
        [
            t.multiply.send(3, 2).continue_with(t.divide, 2),
            in_parallel([t.multiply.send(4, 5), t.multiply.send(3, 4)]).continue_with(t.average),
        ]
    ).continue_with(t.average)
    assert await env.submit_async(nested) == 9.5


async def test_empty_groups(env: PipelineEnvironment) -> None:
    assert await env.submit_async(in_parallel([])) == []
    assert await env.submit_async(in_parallel([]).continue_with(t.echo)) == []
    assert await env.submit_async(in_parallel([in_parallel([])])) == []
    nested = in_parallel([in_parallel([]), in_parallel([t.echo.send("a")])])
    assert await env.submit_async(nested) == [[], ["a"]]


async def test_chain_ending_in_a_nested_group_contributes_its_list(
    env: PipelineEnvironment,
) -> None:
    pipeline = in_parallel(
        [
            t.echo.send(1).continue_with(in_parallel([t.echo.send(2), t.echo.send(3)])),
            t.echo.send(4),
        ]
    )
    assert await env.submit_async(pipeline) == [[(1, 2), (1, 3)], 4]


async def test_group_failure_aggregates_in_group_order(env: PipelineEnvironment) -> None:
    pipeline = in_parallel(
        [
            t.fail.send("first"),
            t.multiply.send(1, 2).continue_with(t.fail),
            t.echo.send("ok"),
            t.fail_with_key_error.send(),
        ]
    ).continue_with(t.echo, "skipped")
    with pytest.raises(TaskError) as caught:
        await env.submit_async(pipeline)
    error = caught.value
    assert error.exception_type == "flink_tasks.AggregatedError"
    lines = error.exception_message.splitlines()
    assert len(lines) == 4
    assert "builtins.ValueError: first" in lines[1]
    assert "builtins.ValueError: 2" in lines[2]
    assert "builtins.KeyError" in lines[3]


async def test_failed_chain_skips_to_its_own_exceptionally(env: PipelineEnvironment) -> None:
    pipeline = in_parallel(
        [
            t.fail.send("x").continue_with(t.echo, "skipped").exceptionally(t.handle_error),
            t.echo.send(2),
        ]
    )
    assert await env.submit_async(pipeline) == [("handled", "builtins.ValueError", "x"), 2]


async def test_group_failure_continues_at_exceptionally(env: PipelineEnvironment) -> None:
    pipeline = (
        in_parallel([t.fail.send("x"), t.echo.send(1)])
        .continue_with(t.echo, "no")
        .exceptionally(t.handle_error)
    )
    result = await env.submit_async(pipeline)
    assert result[0] == "handled" and result[1] == "flink_tasks.AggregatedError"


async def test_return_exceptions(env: PipelineEnvironment) -> None:
    result = await env.submit_async(
        in_parallel([t.fail.send("x"), t.echo.send(1)], return_exceptions=True)
    )
    assert isinstance(result[0], TaskException)
    assert result[0].exception_type == "builtins.ValueError" and result[0].exception_message == "x"
    assert result[1] == 1


async def test_other_chains_run_to_the_end_when_one_fails(env: PipelineEnvironment) -> None:
    t.reset_concurrency_probe()
    pipeline = in_parallel([t.fail.send("x"), *[t.probe.send(i, 0.05) for i in range(5)]])
    with pytest.raises(TaskError):
        await env.submit_async(pipeline)
    _, starts = t.concurrency_probe()
    assert sorted(starts) == [0, 1, 2, 3, 4]


async def test_max_parallelism_bounds_running_chains_in_declaration_order(
    env: PipelineEnvironment,
) -> None:
    t.reset_concurrency_probe()
    result = await env.submit_async(
        in_parallel([t.probe.send(i) for i in range(12)], max_parallelism=3)
    )
    assert result == list(range(12))
    most, starts = t.concurrency_probe()
    assert most == 3
    assert starts == list(range(12))


@pytest.mark.parametrize("limit", [None, 0, -1])
async def test_max_parallelism_none_zero_or_negative_is_unlimited(
    env: PipelineEnvironment, limit: int | None
) -> None:
    t.reset_concurrency_probe()
    await env.submit_async(
        in_parallel([t.probe.send(i, 0.1) for i in range(6)], max_parallelism=limit)
    )
    assert t.concurrency_probe()[0] == 6


async def test_num_stages_flattens_in_order_and_combines(env: PipelineEnvironment) -> None:
    pipeline = in_parallel([t.multiply.send(i) for i in range(1, 101)], num_stages=7).with_initial(
        args=2
    )
    assert await env.submit_async(pipeline) == [2 * i for i in range(1, 101)]
    t.reset_concurrency_probe()
    staged = in_parallel([t.probe.send(i) for i in range(20)], num_stages=4, max_parallelism=4)
    assert await env.submit_async(staged) == list(range(20))
    assert t.concurrency_probe()[0] <= 4


async def test_large_fan_outs_are_staged_automatically(env: PipelineEnvironment) -> None:
    pipeline = in_parallel([t.multiply.send(i) for i in range(2500)]).with_initial(args=3)
    assert await env.submit_async(pipeline) == [3 * i for i in range(2500)]
    assert env.runtime is not None
    largest_definition = max(
        len(env.runtime.state_of("flink_tasks/pipeline", address_id).get("definition") or b"")
        for _, address_id in env.runtime.stats
    )
    assert largest_definition < 60_000


async def test_staged_group_failure_lists_every_failed_chain(env: PipelineEnvironment) -> None:
    chains = [t.fail.send(f"f{i}") if i % 100 == 0 else t.echo.send(i) for i in range(300)]
    with pytest.raises(TaskError) as caught:
        await env.submit_async(in_parallel(chains, num_stages=3))
    lines = caught.value.exception_message.splitlines()[1:]
    assert [line.split(": ")[-1] for line in lines] == ["f0", "f100", "f200"]


async def test_the_same_pipeline_value_twice_in_a_group(env: PipelineEnvironment) -> None:
    step = t.echo.send(1)
    assert await env.submit_async(in_parallel([step, step, step])) == [1, 1, 1]


# ---------------------------------------------------------------- state


async def test_seed_state_example(env: PipelineEnvironment) -> None:
    pipeline = (
        t.multiply_with_state.send(3, 2).continue_with(t.subtract, 1).continue_with(t.add_state)
    )
    assert await env.submit_async(pipeline) == 15


async def test_group_state_merge_earlier_chain_wins(env: PipelineEnvironment) -> None:
    merged = in_parallel(
        [t.set_state.send({"A": 2, "B": 2}), t.set_state.send({"A": 1})]
    ).continue_with(t.get_state)
    assert await env.submit_async(merged) == {"A": 2, "B": 2}
    first = in_parallel([t.set_state.send(123), t.set_state.send(456)]).continue_with(t.get_state)
    assert await env.submit_async(first) == 123


async def test_chains_start_from_the_state_at_group_start(env: PipelineEnvironment) -> None:
    pipeline = t.set_state.send({"x": 1}).continue_with(
        in_parallel([t.get_state.send(), t.get_state.send()])
    )
    assert await env.submit_async(pipeline) == [{"x": 1}, {"x": 1}]


async def test_failing_task_keeps_its_input_state(env: PipelineEnvironment) -> None:
    pipeline = t.set_state.send({"kept": True}).continue_with(t.set_state_then_fail)
    with pytest.raises(TaskError) as caught:
        await env.submit_async(pipeline)
    assert caught.value.state == {"kept": True}


async def test_child_pipelines_are_isolated_unless_inline(env: PipelineEnvironment) -> None:
    isolated = (
        t.set_state.send("parent")
        .continue_with(t.child_with_state, False)
        .continue_with(t.get_state)
    )
    assert await env.submit_async(isolated) == "parent"
    inline = (
        t.set_state.send("parent")
        .continue_with(t.child_with_state, True)
        .continue_with(t.get_state)
    )
    assert await env.submit_async(inline) == "child-state"


# ---------------------------------------------------------------- orchestrators


async def test_seed_orchestrators(env: PipelineEnvironment) -> None:
    assert await env.submit_async(t.multiply_and_subtract.send(3, 2, 1)) == 5
    assert (
        await env.submit_async(t.multiply_and_subtract.send(3, 2, 1).continue_with(t.multiply, 2))
        == 10
    )
    assert await env.submit_async(t.add_positive.send(-3, 2)) == 1
    assert await env.submit_async(t.add_positive.send(3, 2)) == 5
    assert await env.submit_async(t.count_to_100.send(0)) == 100


async def test_recursion_hundreds_of_levels_deep(env: PipelineEnvironment) -> None:
    assert await env.submit_async(t.count_to.send(0, 300)) == 300


async def test_orchestrator_inside_a_group(env: PipelineEnvironment) -> None:
    pipeline = in_parallel([t.add_positive.send(-3, 2), t.multiply_and_subtract.send(2, 2, 1)])
    assert await env.submit_async(pipeline) == [1, 3]


# ---------------------------------------------------------------- exceptionally and finally_do


async def test_exceptionally_skipped_on_success(env: PipelineEnvironment) -> None:
    assert await env.submit_async(t.multiply.send(3, 2).exceptionally(t.handle_error)) == 6


async def test_exceptionally_receives_the_task_exception_then_its_args(
    env: PipelineEnvironment,
) -> None:
    pipeline = (
        t.fail.send("bad").continue_with(t.echo, "skipped").exceptionally(t.handle_error, "extra")
    )
    assert await env.submit_async(pipeline) == ("handled", "builtins.ValueError", "bad", "extra")


async def test_several_exceptionally_and_new_errors(env: PipelineEnvironment) -> None:
    pipeline = (
        t.fail.send("one")
        .exceptionally(t.rethrow)
        .continue_with(t.echo, "skipped")
        .exceptionally(t.handle_error)
    )
    result = await env.submit_async(pipeline)
    assert result == ("handled", "builtins.RuntimeError", "rethrown: one")


def test_invalid_pipelines_fail_when_built() -> None:
    with pytest.raises(ValueError):
        t.echo.send(1).exceptionally(t.handle_error).continue_with(t.echo).finally_do(
            t.echo
        ).continue_with(t.echo)
    with pytest.raises(PipelineDefinitionError):
        t.echo.send(1).finally_do(t.echo).finally_do(t.echo)
    with pytest.raises(ValueError):
        in_parallel([t.echo.send(1)]).continue_with(
            t.echo.send(1).finally_do(t.echo)
        ).continue_with(t.echo)
    with pytest.raises(ValueError):
        from flink_tasks import PipelineBuilder

        PipelineBuilder(t.echo.send(1).exceptionally(t.handle_error).entries[1:])


async def test_finally_runs_after_success_and_keeps_the_result(env: PipelineEnvironment) -> None:
    pipeline = (
        t.multiply.send(3, 2)
        .continue_with(t.update_state, "x", 1)
        .finally_do(t.update_state, "finally", True)
    )
    assert await env.submit_async(pipeline) == 1


async def test_finally_runs_after_an_error_and_keeps_the_error(env: PipelineEnvironment) -> None:
    pipeline = (
        t.set_state.send("at failure")
        .continue_with(t.fail_with_key_error)
        .finally_do(t.record, "after error")
    )
    t.recorded.clear()
    with pytest.raises(TaskError) as caught:
        await env.submit_async(pipeline)
    assert caught.value.exception_type == "builtins.KeyError"
    assert caught.value.state == "at failure"
    assert t.recorded == [("after error",)]


async def test_failing_finally_replaces_the_reply(env: PipelineEnvironment) -> None:
    with pytest.raises(TaskError) as caught:
        await env.submit_async(t.multiply.send(1, 2).finally_do(t.fail, "cleanup failed"))
    assert caught.value.exception_message == "cleanup failed"


async def test_skipped_entries_are_reported(env: PipelineEnvironment) -> None:
    pipeline = (
        t.fail.send("x")
        .continue_with(t.echo, 1)
        .continue_with(t.echo, 2)
        .exceptionally(t.handle_error)
    )
    await env.submit_async(pipeline)
    skipped = [e for e in env.events(pipeline.id) if e.kind == "tasks_skipped"]
    assert [list(e.skipped_task_ids) for e in skipped] == [
        [pipeline.entries[1].task_id, pipeline.entries[2].task_id]
    ]  # type: ignore[union-attr]


async def test_skipped_entries_of_a_failed_pipeline_come_before_its_final_status(
    env: PipelineEnvironment,
) -> None:
    pipeline = t.fail.send("x").continue_with(t.echo, 1).continue_with(t.echo, 2)
    with pytest.raises(TaskError):
        await env.submit_async(pipeline)
    kinds = [e.kind for e in env.events(pipeline.id)]
    assert kinds[-2:] == ["tasks_skipped", "status_changed"]


# ---------------------------------------------------------------- retries


async def test_retries_until_success(env: PipelineEnvironment) -> None:
    assert await env.submit_async(t.flaky.send("retry-ok", 2)) == "succeeded on attempt 3"


async def test_retries_exhausted_say_how_many_attempts(env: PipelineEnvironment) -> None:
    with pytest.raises(TaskError) as caught:
        await env.submit_async(t.flaky.send("retry-exhausted", 5))
    assert "failed after 3 attempts" in caught.value.exception_message


async def test_retry_for_matches_subclasses_only(env: PipelineEnvironment) -> None:
    with pytest.raises(TaskError) as caught:
        await env.submit_async(t.fail_key_error_retried.send())
    assert "failed after 4 attempts" in caught.value.exception_message
    with pytest.raises(TaskError) as caught:
        await env.submit_async(t.fail_value_error_not_retried.send())
    assert "attempts" not in caught.value.exception_message


async def test_retry_delays_back_off(env: PipelineEnvironment) -> None:
    from datetime import timedelta

    from flink_tasks import RetryPolicy

    policy = RetryPolicy(
        retry_for=[ValueError],
        max_retries=3,
        delay=timedelta(milliseconds=100),
        exponential_back_off=True,
    )
    started = time.perf_counter()
    with pytest.raises(TaskError):
        await env.submit_async(t.fail.send("x").set(retry_policy=policy))
    assert time.perf_counter() - started >= 0.7  # 0.1 + 0.2 + 0.4


# ---------------------------------------------------------------- bad input


async def test_unknown_task_type_is_an_error_naming_it(env: PipelineEnvironment) -> None:
    from flink_tasks import FlinkTasks

    elsewhere = FlinkTasks()

    @elsewhere.bind(name="not.registered.anywhere")
    def ghost() -> None: ...

    with pytest.raises(TaskError) as caught:
        await env.submit_async(ghost.send())
    assert caught.value.exception_type == "flink_tasks.TaskNotFoundError"
    assert "not.registered.anywhere" in caught.value.exception_message


async def test_task_in_a_namespace_nobody_serves_fails_clearly(env: PipelineEnvironment) -> None:
    from flink_tasks import FlinkTasks

    elsewhere = FlinkTasks(namespace="nobody")

    @elsewhere.bind()
    def far_away() -> None: ...

    with pytest.raises(TaskError) as caught:
        await env.submit_async(far_away.send())
    assert "nobody" in caught.value.exception_message


async def test_task_exception_carries_type_message_and_traceback(env: PipelineEnvironment) -> None:
    with pytest.raises(TaskError) as caught:
        await env.submit_async(t.fail.send("broken"))
    error = caught.value
    assert error.exception_type == "builtins.ValueError"
    assert error.exception_message == "broken"
    assert "raise ValueError(message)" in error.stacktrace
    assert error.type == t.fail.type_name


async def test_timeout(env: PipelineEnvironment) -> None:
    with pytest.raises(TaskError) as caught:
        await env.submit_async(t.hang.send())
    assert caught.value.exception_type == "flink_tasks.TaskTimeoutError"


async def test_unserializable_result_is_a_task_error(env: PipelineEnvironment) -> None:
    with pytest.raises(TaskError) as caught:
        await env.submit_async(t.unserializable.send())
    assert caught.value.exception_type == "flink_tasks.SerializationError"


def test_unserializable_arguments_are_refused_when_built() -> None:
    from flink_tasks import SerializationError

    with pytest.raises(SerializationError):
        t.echo.send(object()).to_proto()


# ---------------------------------------------------------------- actions and status


async def test_status_and_result_actions(env: PipelineEnvironment) -> None:
    from flink_tasks import PipelineNotFoundError, PipelineStatus

    assert await env.get_status("never-submitted") == PipelineStatus.PENDING
    with pytest.raises(PipelineNotFoundError):
        await env.get_result("never-submitted")
    pipeline = t.multiply.send(3, 2)
    assert await env.submit_async(pipeline) == 6
    assert await env.get_status(pipeline.id) == PipelineStatus.COMPLETED
    assert await env.get_result(pipeline.id) == 6
    request = await env.get_request(pipeline.id)
    entry = pipeline.entries[0]
    assert isinstance(entry, TaskCall)
    assert request == SubmittedPipeline(
        pipeline_id=pipeline.id,
        entries=(RequestedTask(entry.task_id, entry.task_type, args=(3, 2)),),
        reply_topic=request.reply_topic,
        events_topic=request.events_topic,
    )
    assert request.task_count() == 1
    failed = t.fail.send("x")
    with pytest.raises(TaskError):
        await env.submit_async(failed)
    assert await env.get_status(failed.id) == PipelineStatus.FAILED
    with pytest.raises(TaskError):
        await env.get_result(failed.id)


async def test_pause_holds_new_tasks_and_unpause_sends_them(env: PipelineEnvironment) -> None:
    from flink_tasks import PipelineStatus

    t.reset_concurrency_probe()
    pipeline = t.probe.send(0, 0.2).continue_with(t.echo, "after")
    future = asyncio.ensure_future(env.submit_async(pipeline))
    await _wait_for_status(env, pipeline.id, PipelineStatus.RUNNING)
    assert await env.pause(pipeline.id) == PipelineStatus.PAUSED
    await _settled(env)  # the running probe finished; its result arrived while paused
    assert t.concurrency_probe()[1] == [0]
    assert not future.done()
    assert await env.get_status(pipeline.id) == PipelineStatus.PAUSED
    assert await env.unpause(pipeline.id) == PipelineStatus.RUNNING
    assert await future == (0, "after")


async def test_cancel_runs_finally_and_replies_cancelled(env: PipelineEnvironment) -> None:
    from flink_tasks import PipelineCancelledError, PipelineStatus

    t.recorded.clear()
    pipeline = (
        t.sleep_async.send(0.3).continue_with(t.record, "never").finally_do(t.record, "finally")
    )
    future = asyncio.ensure_future(env.submit_async(pipeline))
    await _wait_for_status(env, pipeline.id, PipelineStatus.RUNNING)
    # finally_do still runs, so the pipeline is CANCELLING until it ends
    assert await env.cancel(pipeline.id) == PipelineStatus.CANCELLING
    with pytest.raises(PipelineCancelledError) as caught:
        await future
    assert caught.value.exception_type == "flink_tasks.PipelineCancelledError"
    await _settled(env)  # the cancelled task's late result arrived and was ignored
    assert t.recorded == [("finally",)]
    assert await env.get_status(pipeline.id) == PipelineStatus.CANCELLED


async def test_cancel_reaches_child_pipelines(env: PipelineEnvironment) -> None:
    from flink_tasks import PipelineCancelledError, PipelineStatus

    t.reset_concurrency_probe()
    pipeline = in_parallel(
        [t.probe.send(i, 0.05).continue_with(t.probe, 0.05) for i in range(4)], max_parallelism=1
    )
    future = asyncio.ensure_future(env.submit_async(pipeline))
    await _wait_for_status(env, pipeline.id, PipelineStatus.RUNNING)
    await _until(lambda: t.concurrency_probe()[1] == [0])
    await env.cancel(pipeline.id)
    with pytest.raises(PipelineCancelledError):
        await future
    await _settled(env)  # the first chain's probe ended; nothing may start after it
    _, starts = t.concurrency_probe()
    assert starts == [0]


async def test_cancel_reaches_a_pipeline_a_task_returned(env: PipelineEnvironment) -> None:
    from flink_tasks import PipelineCancelledError

    t.reset_concurrency_probe()
    t.recorded.clear()
    pipeline = t.orchestrate_probe.send(0, 0.3)
    future = asyncio.ensure_future(env.submit_async(pipeline))
    await _until(lambda: t.concurrency_probe()[1] == [0])  # the child's first task runs
    await env.cancel(pipeline.id)
    with pytest.raises(PipelineCancelledError):
        await future
    await _settled(env)  # the child's probe ended; its next task may not start
    assert t.recorded == []


async def test_actions_on_finished_pipelines_are_errors(env: PipelineEnvironment) -> None:
    from flink_tasks import ActionError, PipelineStatus

    pipeline = t.echo.send(1)
    await env.submit_async(pipeline)
    for action in (env.pause, env.unpause, env.cancel):
        with pytest.raises(ActionError):
            await action(pipeline.id)
    assert await env.get_status(pipeline.id) == PipelineStatus.COMPLETED


async def test_duplicate_submission_of_a_running_pipeline_is_rejected(
    env: PipelineEnvironment,
) -> None:
    pipeline = t.sleep_async.send(0.3, "first")
    first = asyncio.ensure_future(env.submit_async(pipeline))
    await _wait_for_status(env, pipeline.id, PipelineStatus.RUNNING)
    with pytest.raises(TaskError) as caught:
        await env.submit_async(pipeline)
    assert caught.value.exception_type == "flink_tasks.PipelineAlreadyRunningError"
    assert await first == "first"
    assert await env.submit_async(pipeline) == "first"  # a finished id may run again


async def test_events_of_a_pipeline(env: PipelineEnvironment) -> None:
    pipeline = in_parallel([t.echo.send(1), t.echo.send(2)])
    await env.submit_async(pipeline)
    kinds = [e.kind for e in env.events(pipeline.id) if e.pipeline_id == pipeline.id]
    assert kinds[0] == "pipeline_created"
    statuses = [e.status for e in env.events(pipeline.id) if e.kind == "status_changed"]
    from flink_tasks import PipelineStatus

    assert statuses == [
        PipelineStatus.RUNNING,
        PipelineStatus.COMPLETED,
    ]
    assert "group_progress" in kinds


async def _wait_for_status(env: PipelineEnvironment, pipeline_id: str, status: object) -> None:
    for _ in range(200):
        if await env.get_status(pipeline_id) == status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{pipeline_id} never reached {status}")


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def _settled(env: PipelineEnvironment) -> None:
    assert env.runtime is not None
    await env.runtime.settled()
