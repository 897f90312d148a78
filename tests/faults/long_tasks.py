"""Tasks of the long-task scenarios, served by `flink-tasks serve tests.faults.long_tasks:tasks`.

Runs are recorded in `$FLINK_TASKS_FAULTS_EXEC_LOG` (one line per run of a body, appended
atomically), so a test can count runs across killed worker processes."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta

from flink_tasks import FlinkTasks, RetryPolicy, WorkerLostError

tasks = FlinkTasks(default_timeout=timedelta(minutes=5))


def _record(key: str) -> None:
    path = os.environ.get("FLINK_TASKS_FAULTS_EXEC_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{key}\n".encode())
        finally:
            os.close(fd)


@tasks.bind()
def long_sync(key: str, seconds: float) -> str:
    """Sleeps `seconds` in a thread (a long blocking job)."""
    _record(key)
    time.sleep(seconds)
    return f"{key} slept {seconds:g}s"


@tasks.bind()
async def long_async(key: str, seconds: float) -> str:
    _record(key)
    await asyncio.sleep(seconds)
    return f"{key} waited {seconds:g}s"


@tasks.bind(retry_policy=RetryPolicy(retry_for=[WorkerLostError], max_retries=2))
async def long_retried(key: str, seconds: float) -> str:
    _record(key)
    await asyncio.sleep(seconds)
    return f"{key} done"


@tasks.bind()
def quick(x: int) -> int:
    return x * x


@tasks.bind()
def total(values: list[int]) -> int:
    return sum(values)
