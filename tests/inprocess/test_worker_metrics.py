"""The pipeline function's metrics in one worker process: runs started and their durations (the
start time kept on the run record), and every message counted in exactly one batch."""

from __future__ import annotations

import pytest

from flink_tasks import TaskError
from flink_tasks.testing import PipelineEnvironment
from tests.pipelines import echo, fail, sleep_sync


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
