"""Tasks for the scale-out test: served by `flink-tasks serve tests.deploy.scaleout_tasks:tasks`."""

from __future__ import annotations

import asyncio
import os

from flink_tasks import FlinkTasks

tasks = FlinkTasks()


@tasks.bind()
async def whoami(i: int) -> int:
    """The pid of the worker process that ran this task (slow enough to overlap). Async: async
    bodies run in the worker process itself, sync ones in its process pool's children."""
    await asyncio.sleep(0.2)
    return os.getpid()
