"""Suite-wide fixtures: the real local runtime with a worker serving the test tasks.

The order of a whole run: unit and in-process tests first (the fastest failures), then the
modules with runtimes of their own, then those on the session runtime (``local_env``,
``local_runtime``) next to each other, so that runtime is not idle beside the others, and the
client's tests last."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from flink_tasks_client import FlinkTasksClient

from examples.seed import tasks as seed_tasks
from flink_tasks import FlinkTasks
from flink_tasks.testing import PipelineEnvironment
from tests.pipelines import tasks as test_tasks

ALL_TASKS = FlinkTasks().include(test_tasks).include(seed_tasks)

HERE = Path(__file__).resolve().parent
SESSION_RUNTIME = frozenset({"local_env", "local_runtime"})


def _rank(path: Path, uses_session_runtime: bool) -> int:
    if HERE not in path.parents:
        return 4  # client/tests: a Kafka broker of their own, for the rest of the session
    part = path.relative_to(HERE).parts[0]
    # tests/cluster overrides `local_env` with its own cluster: it is not a session-runtime user
    if uses_session_runtime and part != "cluster":
        return 3
    return {"unit": 0, "inprocess": 1}.get(part, 2)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    uses: dict[Path, bool] = {}
    for item in items:
        uses[item.path] = uses.get(item.path, False) or bool(
            SESSION_RUNTIME & set(getattr(item, "fixturenames", ()))
        )
    items.sort(key=lambda item: _rank(item.path, uses[item.path]))  # stable: modules stay whole


@pytest.fixture(scope="session")
async def local_env() -> AsyncIterator[PipelineEnvironment]:
    """Kafka + StateFun (started, or reused when `flink-tasks local up` runs) and a worker here."""
    async with PipelineEnvironment.start_local(ALL_TASKS, client=FlinkTasksClient) as env:
        yield env
