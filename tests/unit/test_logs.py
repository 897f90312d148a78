"""Log lines carry the pipeline and task ids of the work they are about."""

from __future__ import annotations

import logging

from flink_tasks import FlinkTasks, logs
from flink_tasks.testing import PipelineEnvironment

tasks = FlinkTasks()


@tasks.bind()
async def who_am_i() -> tuple[str, str]:
    return logs.PIPELINE_ID.get(), logs.TASK_ID.get()


def _formatted(message: str) -> str:
    record = logging.LogRecord("flink_tasks.x", logging.WARNING, __file__, 1, message, None, None)
    logs.IdsFilter().filter(record)
    return logging.Formatter("%(name)s%(flink_ids)s: %(message)s").format(record)


def test_the_format_shows_the_ids_when_set() -> None:
    assert _formatted("outside") == "flink_tasks.x: outside"
    with logs.pipeline_ids("P"):
        assert _formatted("engine") == "flink_tasks.x [pipeline=P]: engine"
        with logs.pipeline_ids("P", "t1"):
            assert _formatted("task") == "flink_tasks.x [pipeline=P task=t1]: task"
    assert _formatted("after") == "flink_tasks.x: after"
    assert "%(flink_ids)s" in logs.FORMAT


async def test_a_task_runs_with_its_pipeline_and_task_ids() -> None:
    async with PipelineEnvironment.in_process(tasks, default_timeout=30) as env:
        pipeline = who_am_i.send()
        task_id = pipeline.to_proto().entries[0].task.task_id
        assert await env.submit_async(pipeline) == (pipeline.id, task_id)
