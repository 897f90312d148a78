"""A registry for tests/deploy/test_supervisor.py whose import takes
``$FLINK_TASKS_TEST_IMPORT_DELAY`` seconds, in every process that imports it (a large model
loaded at import, a slow network mount)."""

from __future__ import annotations

import os
import time

from flink_tasks import FlinkTasks

time.sleep(float(os.environ.get("FLINK_TASKS_TEST_IMPORT_DELAY", "0")))

tasks = FlinkTasks()


@tasks.bind()
def ping() -> str:
    return "pong"
