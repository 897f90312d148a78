"""Tasks for the scale-out test: served by `flink-tasks serve tests.deploy.scaleout_tasks:tasks`."""

from __future__ import annotations

import os
import time

from flink_tasks import FlinkTasks

tasks = FlinkTasks()


@tasks.bind()
def whoami(i: int) -> int:
    """The pid of the worker process that ran this task (slow enough to overlap)."""
    time.sleep(0.2)
    return os.getpid()
