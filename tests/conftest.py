"""Suite-wide fixtures: the real local runtime with a worker serving the test tasks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from flink_tasks_client import FlinkTasksClient

from examples.seed import tasks as seed_tasks
from flink_tasks import FlinkTasks
from flink_tasks.testing import PipelineEnvironment
from tests.pipelines import tasks as test_tasks

ALL_TASKS = FlinkTasks().include(test_tasks).include(seed_tasks)


@pytest.fixture(scope="session")
async def local_env() -> AsyncIterator[PipelineEnvironment]:
    """Kafka + StateFun (started, or reused when `flink-tasks local up` runs) and a worker here."""
    async with PipelineEnvironment.start_local(ALL_TASKS, client=FlinkTasksClient) as env:
        yield env
