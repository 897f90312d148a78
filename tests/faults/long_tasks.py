"""Tasks of the long-task scenarios (served with the other fault tasks by `worker_main`); each
run of a body is recorded under kind "long" (see `fault_tasks.record_run`)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from flink_tasks import FlinkTasks, RetryPolicy, WorkerLostError
from tests.faults.fault_tasks import record_run

tasks = FlinkTasks(default_timeout=timedelta(minutes=5))


@tasks.bind()
def long_sync(key: str, seconds: float) -> str:
    """Sleeps `seconds` in a thread (a long blocking job)."""
    record_run("long", key)
    time.sleep(seconds)
    return f"{key} slept {seconds:g}s"


@tasks.bind()
async def long_async(key: str, seconds: float) -> str:
    record_run("long", key)
    await asyncio.sleep(seconds)
    return f"{key} waited {seconds:g}s"


@tasks.bind(retry_policy=RetryPolicy(retry_for=[WorkerLostError], max_retries=2))
async def long_retried(key: str, seconds: float) -> str:
    record_run("long", key)
    await asyncio.sleep(seconds)
    return f"{key} done"


@tasks.bind()
def quick(x: int) -> int:
    return x * x


@tasks.bind()
async def square_slowly(x: int) -> int:
    """`quick`, but slow enough for a fan-out's calls to overlap and so open several
    connections (which the kernel spreads over `serve --workers N`'s processes)."""
    await asyncio.sleep(0.2)
    return x * x
