"""Tasks of test_local_restart, served by `flink-tasks serve`: a step that records each run of
its body in $RESTART_TEST_RUNS (one line per run), and a second step."""

from __future__ import annotations

import os

from flink_tasks import FlinkTasks

tasks = FlinkTasks()


@tasks.bind()
def record(x: int) -> int:
    with open(os.environ["RESTART_TEST_RUNS"], "a") as runs:
        runs.write(f"{x}\n")
    return x + 1


@tasks.bind()
def times_ten(x: int) -> int:
    return x * 10


def chain_of_4() -> object:
    return record.send(4).continue_with(times_ten)


def chain_of_7() -> object:
    return record.send(7).continue_with(times_ten)
