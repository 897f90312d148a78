from collections.abc import AsyncIterator

import pytest

from flink_tasks.testing import PipelineEnvironment
from tests.pipelines import tasks


@pytest.fixture
async def env() -> AsyncIterator[PipelineEnvironment]:
    async with PipelineEnvironment.in_process(tasks, default_timeout=30) as environment:
        yield environment
