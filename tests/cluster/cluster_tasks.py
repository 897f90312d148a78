"""Tasks of the cluster-mode tests: slow enough that a fan-out is still running when a
TaskManager is killed, with results that are exact; plus every task of the acceptance suite
(tests/acceptance runs on the same cluster)."""

from __future__ import annotations

import time

from examples.seed import tasks as seed_tasks
from flink_tasks import FlinkTasks, PipelineBuilder, in_parallel
from tests.pipelines import tasks as test_tasks

tasks = FlinkTasks()


@tasks.bind()
def slow_square(x: int) -> int:
    time.sleep(0.2)
    return x * x


@tasks.bind()
def sum_all(values: list[int]) -> int:
    return sum(values)


# what tests/conftest.py serves to the acceptance suite
tasks.include(test_tasks).include(seed_tasks)


def sum_of_squares(n: int, offset: int = 0, max_parallelism: int | None = None) -> PipelineBuilder:
    calls = [slow_square.send(offset + i) for i in range(n)]
    return in_parallel(calls, max_parallelism=max_parallelism).continue_with(sum_all)


def expected_sum_of_squares(n: int, offset: int = 0) -> int:
    return sum((offset + i) ** 2 for i in range(n))
