"""Log records that say which pipeline and task they are about.

The worker sets the ids of the message it handles (`pipeline_ids`); the format every
flink-tasks command uses shows them as `[pipeline=… task=…]` after the logger's name.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

PIPELINE_ID: ContextVar[str] = ContextVar("flink_tasks_pipeline_id", default="")
TASK_ID: ContextVar[str] = ContextVar("flink_tasks_task_id", default="")

FORMAT = "%(asctime)s %(levelname)-7s %(name)s%(flink_ids)s: %(message)s"


class IdsFilter(logging.Filter):
    """Adds `flink_ids` (" [pipeline=P task=T]", or "" outside any pipeline) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        pipeline_id, task_id = PIPELINE_ID.get(), TASK_ID.get()
        parts = [f"pipeline={pipeline_id}"] if pipeline_id else []
        if task_id:
            parts.append(f"task={task_id}")
        record.flink_ids = f" [{' '.join(parts)}]" if parts else ""
        return True


def set_ids(pipeline_id: str, task_id: str = "") -> None:
    """Mark the current context (an asyncio task, a thread's run) as working for these ids."""
    PIPELINE_ID.set(pipeline_id)
    TASK_ID.set(task_id)


@contextmanager
def pipeline_ids(pipeline_id: str, task_id: str = "") -> Iterator[None]:
    """The ids for the duration of a block."""
    pipeline_token = PIPELINE_ID.set(pipeline_id)
    task_token = TASK_ID.set(task_id)
    try:
        yield
    finally:
        TASK_ID.reset(task_token)
        PIPELINE_ID.reset(pipeline_token)


def configure(level: int, *, datefmt: str | None = None) -> None:
    """Log to stderr in FORMAT (the ids included), as every flink-tasks command does."""
    logging.basicConfig(level=level, format=FORMAT, datefmt=datefmt, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, IdsFilter) for f in handler.filters):
            handler.addFilter(IdsFilter())
