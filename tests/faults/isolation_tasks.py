"""Tasks of the isolation scenarios (`test_08_isolation.py`), served by ``flink-tasks serve
tests.faults.isolation_tasks:tasks --pool process``; the fault suite's ordinary tasks
(`fault_tasks`) are served too, for the pipelines that run alongside."""

from __future__ import annotations

import ctypes
import os
import time
from datetime import timedelta

from flink_tasks import FlinkTasks, RetryPolicy, WorkerLostError
from flink_tasks.context import TaskContext
from tests.faults import fault_tasks

# below the scenarios' 20 s call budget: a task that hangs is reported before StateFun gives up
tasks = FlinkTasks(default_timeout=timedelta(seconds=15)).include(fault_tasks.tasks)


@tasks.bind()
def exit_hard(code: int) -> None:
    os._exit(code)


@tasks.bind()
def segfault() -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV


@tasks.bind(with_context=True, retry_policy=RetryPolicy(retry_for=[WorkerLostError]))
def exit_on_first_attempt(ctx: TaskContext, value: int) -> int:
    """Dies on attempt 1; `retry_for=[WorkerLostError]` runs it again in a fresh child."""
    if ctx.attempt == 1:
        os._exit(9)
    return value * 10


@tasks.bind(max_memory="200MiB")
def hog(mib: int) -> int:
    block = bytearray(mib * 2**20)
    for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
        block[i] = 1
    time.sleep(10)
    return len(block)


@tasks.bind(timeout=timedelta(seconds=1))
def hang(seconds: float) -> str:
    time.sleep(seconds)
    return "woke up"


@tasks.bind()
def plain(x: int) -> int:
    return x + 1


@tasks.bind(timeout=timedelta(seconds=2))
async def block_loop(seconds: float) -> str:
    time.sleep(seconds)  # blocks the event loop it runs on, on purpose
    return "unblocked"
