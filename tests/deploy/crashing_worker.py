"""A registry for tests/deploy/test_supervisor.py: a worker process that imports it exits at once
(code 3) while the file named by ``$FLINK_TASKS_TEST_CRASH_FILE`` exists, the way a worker
crash-loops until its cause (a bad node, a missing mount) goes away."""

from __future__ import annotations

import os

from flink_tasks import FlinkTasks

_crash_file = os.environ.get("FLINK_TASKS_TEST_CRASH_FILE")
if _crash_file and os.path.exists(_crash_file):
    os._exit(3)

tasks = FlinkTasks()


@tasks.bind()
def ping() -> str:
    return "pong"
