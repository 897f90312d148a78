"""The worker's metrics in one worker process: runs started and their durations (the start time
kept on the run record), every message counted in exactly one batch, a task's wait for the pool
apart from its run time."""

from __future__ import annotations

import asyncio

import pytest

from flink_tasks import TaskError
from flink_tasks.testing import PipelineEnvironment
from flink_tasks.worker import PoolSettings
from tests.pipelines import echo, fail, sleep_sync, tasks

SLEEP = "tests.pipelines.sleep_sync"
ECHO = "tests.pipelines.echo"


async def test_runs_durations_and_batches_are_counted(env: PipelineEnvironment) -> None:
    assert await env.submit_async(sleep_sync.send(0.3, "a").continue_with(echo)) == "a"
    with pytest.raises(TaskError):
        await env.submit_async(echo.send(1).continue_with(fail))
    assert env.worker is not None
    metrics = env.worker.metrics
    assert metrics.value("flink_tasks_pipelines_started_total", level="root") == 2
    duration = "flink_tasks_pipeline_duration_seconds"
    assert metrics.value(f"{duration}_count", level="root", outcome="completed") == 1
    assert metrics.value(f"{duration}_count", level="root", outcome="failed") == 1
    # the completed run took the 0.3 s task: its start time came from the run record
    completed = metrics.value(f"{duration}_bucket", level="root", outcome="completed", le="0.25")
    assert completed == 0
    assert 0.3 <= metrics.value(f"{duration}_sum", level="root", outcome="completed") < 30
    results = metrics.value("flink_tasks_pipeline_messages_total", message_type="TaskResult")
    assert results == 4
    every = sum(
        metrics.value("flink_tasks_pipeline_messages_total", message_type=kind)
        for kind in (
            "PipelineRequest",
            "TaskResult",
            "PipelineMessage",
            "ActionRequest",
            "WorkerReport",
        )
    )
    assert metrics.value("flink_tasks_pipeline_batch_size_sum") == every


async def test_a_tasks_wait_for_the_pool_is_apart_from_its_run_time() -> None:
    # one pool thread: `echo` waits while `sleep_sync` holds it for 2 s
    async with PipelineEnvironment.in_process(tasks, pool=PoolSettings(size=1)) as env:
        assert env.worker is not None
        metrics = env.worker.metrics
        held = asyncio.ensure_future(env.submit_async(sleep_sync.send(2.0, "held")))
        while not metrics.value("flink_tasks_tasks_in_progress", task_type=SLEEP):
            assert not held.done(), held.result()  # it must run, not end before it started
            await asyncio.sleep(0.01)  # until the executor has it (no await in between)
        assert await env.submit_async(echo.send("queued")) == "queued"
        assert await held == "held"

    def queue(task_type: str, suffix: str) -> float:
        return metrics.value(f"flink_tasks_task_queue_seconds_{suffix}", task_type=task_type)

    def run(task_type: str, suffix: str) -> float:
        return metrics.value(
            f"flink_tasks_task_duration_seconds_{suffix}", task_type=task_type, outcome="succeeded"
        )

    assert queue(SLEEP, "count") == queue(ECHO, "count") == 1
    assert run(SLEEP, "count") == run(ECHO, "count") == 1
    assert run(SLEEP, "sum") >= 2.0  # its body slept 2 s
    assert queue(SLEEP, "sum") < 1.0  # it had the thread at once
    # `echo` arrived while the 2 s ran: it waited for most of them, and ran for microseconds
    assert queue(ECHO, "sum") >= 1.0
    assert run(ECHO, "sum") < 1.0
