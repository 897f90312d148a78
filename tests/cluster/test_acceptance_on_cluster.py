"""The acceptance suite (tests/acceptance: every example of the user guide) on the cluster mode:
a JobManager and two TaskManagers at parallelism 2, the exactly-once egress, the worker in its
own process (`flink-tasks serve`). The same test functions, run against the shared cluster of
tests/cluster/conftest.py instead of the MiniCluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from flink_tasks_client import FlinkTasksClient

from flink_tasks.runtime import LocalRuntime
from flink_tasks.testing import PipelineEnvironment
from tests.acceptance.test_seed_pipelines import (  # collected again, here
    test_seed_example,
    test_seed_ten_thousand_tasks_in_ten_stages_with_initial_args,
)

__all__ = ["test_seed_example", "test_seed_ten_thousand_tasks_in_ten_stages_with_initial_args"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
async def local_env(cluster: LocalRuntime) -> AsyncIterator[PipelineEnvironment]:
    """What tests/conftest.py's `local_env` is, on the cluster: a client with the same options."""
    settings = cluster.settings
    assert (settings.taskmanagers, settings.parallelism) == (2, 2)
    client = FlinkTasksClient(
        bootstrap_servers=settings.bootstrap_servers,
        request_topic=settings.requests_topic,
        action_topic=settings.actions_topic,
        reply_topic=settings.replies_topic,
        events_topic=settings.events_topic,
        # tests/conftest.py's 2 min, with room for four JVMs on a busy 2-core machine
        default_timeout=timedelta(minutes=5),
        read_committed=True,
        pipeline_reuse="allow",
    )
    try:
        await client.wait_ready_async()
        yield PipelineEnvironment(client)
    finally:
        await client.aclose()
