"""Tasks of the cluster-mode tests: slow enough that a fan-out is still running when a
TaskManager is killed, with results that are exact."""

from __future__ import annotations

import time

from flink_tasks import FlinkTasks, PipelineBuilder, in_parallel

tasks = FlinkTasks()


@tasks.bind()
def slow_square(x: int) -> int:
    time.sleep(0.2)
    return x * x


@tasks.bind()
def total(values: list[int]) -> int:
    return sum(values)


def sum_of_squares(n: int, offset: int = 0, max_parallelism: int | None = None) -> PipelineBuilder:
    calls = [slow_square.send(offset + i) for i in range(n)]
    return in_parallel(calls, max_parallelism=max_parallelism).continue_with(total)


def expected_sum_of_squares(n: int, offset: int = 0) -> int:
    return sum((offset + i) ** 2 for i in range(n))
