"""Inlined chain steps (`EngineSettings.inline_chain_steps`): the same results, task events,
retries, error handling and state as step-by-step, in fewer remote calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import pytest

from flink_tasks import TaskError, in_parallel
from flink_tasks._proto import messages_pb2
from flink_tasks.config import INLINE_CHAIN_STEPS_VAR, inline_chain_steps_from_env
from flink_tasks.engine import EngineSettings
from flink_tasks.pipeline import PipelineBuilder
from flink_tasks.testing import PipelineEnvironment
from tests import pipelines as t


class TaskEvents:
    """The worker's task hooks, in the order they fired."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []

    def task_received(self, request: messages_pb2.TaskRequest) -> None:
        self.seen.append(("received", request.task_type, request.attempt))

    def task_started(self, request: messages_pb2.TaskRequest) -> None:
        self.seen.append(("started", request.task_type, request.attempt))

    def task_finished(
        self, request: messages_pb2.TaskRequest, result: messages_pb2.TaskResult
    ) -> None:
        self.seen.append(("finished", request.task_type, request.attempt))


def _task_results(env: PipelineEnvironment) -> int:
    """Task results the pipeline function got: one per remote call of a task function."""
    assert env.worker is not None
    metrics = env.worker.metrics
    return int(metrics.value("flink_tasks_pipeline_messages_total", message_type="TaskResult"))


async def _run(steps: int, pipeline: PipelineBuilder) -> tuple[object, list[object], int]:
    """(result or the TaskError's type and message, task events, remote calls) with `steps`."""
    events = TaskEvents()
    engine = EngineSettings(inline_chain_steps=steps)
    async with PipelineEnvironment.in_process(
        t.tasks, engine=engine, hooks=[events], default_timeout=20
    ) as env:
        outcome: object
        try:
            outcome = await env.submit_async(pipeline)
        except TaskError as err:
            outcome = ("error", err.exception_type, err.exception_message)
        return outcome, list(events.seen), _task_results(env)


def _chain(steps: int) -> PipelineBuilder:
    pipeline = t.add.send(0, 1)
    for _ in range(steps - 1):
        pipeline = pipeline.continue_with(t.add, 1)
    return pipeline


@pytest.fixture(autouse=True)
def _fresh_flaky_counts() -> Iterator[None]:
    t._attempts.clear()
    yield
    t._attempts.clear()


@pytest.mark.parametrize(("steps", "calls"), [(0, 10), (3, 3), (9, 1), (20, 1)])
async def test_a_chain_runs_in_fewer_remote_calls_with_the_same_result(
    steps: int, calls: int
) -> None:
    outcome, events, results = await _run(steps, _chain(10))
    assert outcome == 10
    assert results == calls
    expected = [
        (kind, "examples.seed.add", 1)
        for _ in range(10)
        for kind in ("received", "started", "finished")
    ]
    assert events == expected


async def test_a_failing_inlined_step_is_retried_by_its_policy() -> None:
    pipeline = (
        t.add.send(1, 1).continue_with(t.echo).continue_with(t.flaky, 2).continue_with(t.echo)
    )
    plain = await _run(0, pipeline)
    t._attempts.clear()
    inlined = await _run(10, pipeline)
    assert plain[0] == inlined[0] == "succeeded on attempt 3"
    assert plain[1] == inlined[1]  # the same task events, retries included
    flaky = [e for e in inlined[1] if e[1] == "tests.pipelines.flaky" and e[0] == "started"]
    assert [attempt for *_, attempt in flaky] == [1, 2, 3]
    # one call up to the first failure, one per retry (each carrying the last echo)
    assert (plain[2], inlined[2]) == (6, 3)


@pytest.mark.parametrize(
    ("build", "outcome", "calls"),
    [
        pytest.param(
            lambda: t.get_state.send()
            .continue_with(t.update_state, "a", 1)
            .continue_with(t.echo)
            .continue_with(t.update_state, "b", 2)
            .continue_with(t.get_state)
            .with_initial(state={"s": 0}),
            {"s": 0, "a": 1, "b": 2},
            1,
            id="state_passes_from_step_to_step",
        ),
        pytest.param(
            lambda: t.echo.send(1).continue_with(t.not_fruitful, 2).continue_with(t.echo, 3),
            (None, 3),
            1,
            id="a_not_fruitful_step_passes_none",
        ),
        pytest.param(
            lambda: t.echo.send(1)
            .continue_with(t.fail, "no")
            .continue_with(t.echo, "skipped")
            .exceptionally(t.handle_error, "caught")
            .continue_with(t.echo, "after"),
            ("handled", "builtins.ValueError", "1", "caught", "after"),
            3,  # echo + fail; handle_error (not inlined: runs on an error) + echo
            id="a_failing_inlined_step_goes_to_exceptionally",
        ),
        pytest.param(
            lambda: t.echo.send(1)
            .continue_with(t.fail_with_key_error)
            .continue_with(t.echo, "skipped")
            .finally_do(t.echo, "finally"),
            ("error", "builtins.KeyError", "'missing'"),
            2,
            id="a_failing_inlined_step_fails_the_chain_and_finally_runs",
        ),
        pytest.param(
            lambda: t.echo.send(2).continue_with(t.count_to, 4).continue_with(t.echo, "end"),
            (4, "end"),
            None,
            id="an_orchestrator_step_ends_the_inlined_run",
        ),
    ],
)
async def test_the_same_outcome_and_task_events_as_step_by_step(
    build: object, outcome: object, calls: int | None
) -> None:
    assert callable(build)
    plain = await _run(0, build())
    inlined = await _run(10, build())
    assert plain[0] == inlined[0] == outcome
    assert plain[1] == inlined[1]
    if calls is not None:
        assert inlined[2] == calls
    assert inlined[2] < plain[2]


async def test_a_cancel_does_not_stop_steps_already_handed_to_the_worker() -> None:
    """The documented price of inlining (docs/decisions.md): a cancel (or pause) that arrives
    while step k runs cannot stop the steps the worker got with it; they run, their results are
    ignored, and the pipeline ends CANCELLED as usual, with `finally_do` run once."""
    from flink_tasks import PipelineCancelledError, PipelineStatus

    t.recorded.clear()
    pipeline = (
        t.sleep_async.send(0.3)
        .continue_with(t.record, "handed over")
        .finally_do(t.record, "finally")
    )
    engine = EngineSettings(inline_chain_steps=10)
    async with PipelineEnvironment.in_process(t.tasks, engine=engine, default_timeout=20) as env:
        future = asyncio.ensure_future(env.submit_async(pipeline))
        for _ in range(200):
            if await env.get_status(pipeline.id) == PipelineStatus.RUNNING:
                break
            await asyncio.sleep(0.01)
        assert await env.cancel(pipeline.id) == PipelineStatus.CANCELLING
        with pytest.raises(PipelineCancelledError):
            await future
        assert env.runtime is not None
        for _ in range(200):  # the sleeping step ends, then the inlined one runs
            await env.runtime.settled()
            if len(t.recorded) == 2:
                break
            await asyncio.sleep(0.01)
        assert sorted(t.recorded, key=str) == [("finally",), (None, "handed over")]
        assert await env.get_status(pipeline.id) == PipelineStatus.CANCELLED


@pytest.mark.parametrize(
    ("build", "outcome", "calls"),
    [
        pytest.param(
            lambda: t.echo.send(1)
            .continue_with(t.echo, 2)
            .continue_with(in_parallel([t.echo.send(3), t.echo.send(4)]))
            .continue_with(t.echo, 5)
            .continue_with(t.echo, 6),
            ([(1, 2, 3), (1, 2, 4)], 5, 6),
            4,  # two steps, the group's two chains, then two steps
            id="a_group_ends_the_inlined_run",
        ),
        pytest.param(
            lambda: t.echo.send(1)
            .continue_with(t.echo, 2)
            .continue_with(t.echo, 3)
            .set(countdown=timedelta(milliseconds=50))
            .continue_with(t.echo, 4),
            (1, 2, 3, 4),
            3,  # the delayed step runs alone: it neither is inlined nor carries the next
            id="a_countdown_ends_the_inlined_run",
        ),
    ],
)
async def test_only_plain_steps_are_inlined(build: object, outcome: object, calls: int) -> None:
    assert callable(build)
    plain = await _run(0, build())
    inlined = await _run(10, build())
    assert plain[0] == inlined[0] == outcome
    assert plain[1] == inlined[1]
    assert inlined[2] == calls


def test_the_setting_from_the_environment() -> None:
    var = INLINE_CHAIN_STEPS_VAR
    assert inline_chain_steps_from_env({}) == 0
    assert inline_chain_steps_from_env({var: " 9 "}) == 9
    for bad in ("nine", "-1"):
        with pytest.raises(ValueError, match=f"{var} must be a whole number >= 0, got {bad!r}"):
            inline_chain_steps_from_env({var: bad})
    with pytest.raises(ValueError, match="inline_chain_steps must be >= 0"):
        EngineSettings(inline_chain_steps=-1)
