"""The Celery peer's app: the same trivial tasks as bench/tasks.py, Redis broker and backend.

Runs in bench/.venvs/celery (never imported by the project venv).
"""

from __future__ import annotations

import os

from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:21379")

app = Celery("bench", broker=f"{REDIS_URL}/0", backend=f"{REDIS_URL}/1")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=600,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task
def inc(x: int) -> int:
    return x + 1


@app.task
def count(results: list[int]) -> int:
    return len(results)
