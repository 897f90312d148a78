"""The in-process environment on virtual time: back-offs and deadlines take no real time."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from flink_tasks import FlinkTasks, PipelineStatus, RetryPolicy, TaskError
from flink_tasks.testing import PipelineEnvironment

tasks = FlinkTasks()
attempts: dict[str, int] = {}


@tasks.bind(
    retry_policy=RetryPolicy(retry_for=[ValueError], max_retries=2, delay=timedelta(seconds=30))
)
def fails_twice(key: str) -> str:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] <= 2:
        raise ValueError(f"attempt {attempts[key]}")
    return f"done after {attempts[key]} attempts"


@tasks.bind(
    retry_policy=RetryPolicy(retry_for=[ValueError], max_retries=1, delay=timedelta(hours=1))
)
def always_fails(key: str) -> None:
    raise ValueError(key)


async def test_a_30s_retry_back_off_runs_in_milliseconds() -> None:
    async with PipelineEnvironment.in_process(tasks, virtual_time=True) as env:
        assert env.clock is not None
        started_ms, started = env.clock(), time.monotonic()
        pipeline = fails_twice.send("a")
        assert await env.submit_async(pipeline) == "done after 3 attempts"
        assert time.monotonic() - started < 5.0  # two 30 s back-offs, no real waiting
        assert env.clock() - started_ms == 60_000  # exactly the two back-offs passed
        # nobody waits now: the clock stays put, the finished pipeline stays retained
        assert await env.get_status(pipeline.id) == PipelineStatus.COMPLETED
        assert await env.get_result(pipeline.id) == "done after 3 attempts"


async def test_an_hour_back_off_then_the_error() -> None:
    async with PipelineEnvironment.in_process(tasks, virtual_time=True) as env:
        assert env.clock is not None
        started_ms = env.clock()
        with pytest.raises(TaskError) as raised:
            await env.submit_async(always_fails.send("gone"))
        assert raised.value.exception_type == "builtins.ValueError"
        assert env.clock() - started_ms == 3_600_000


async def test_without_virtual_time_there_is_no_clock() -> None:
    async with PipelineEnvironment.in_process(tasks) as env:
        assert env.clock is None
