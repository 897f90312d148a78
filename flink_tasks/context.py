"""`TaskContext`: what a task bound with `with_context=True` receives."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TaskContext:
    """Ids and attempt of the running task, and a logger that adds them to every record."""

    task_id: str
    task_type: str
    pipeline_id: str
    root_pipeline_id: str
    attempt: int
    logger: logging.LoggerAdapter[logging.Logger] = field(repr=False, compare=False)

    @classmethod
    def create(
        cls, *, task_id: str, task_type: str, pipeline_id: str, root_pipeline_id: str, attempt: int
    ) -> TaskContext:
        """A context whose logger carries the task's ids."""
        extra: dict[str, Any] = {
            "task_id": task_id,
            "task_type": task_type,
            "pipeline_id": pipeline_id,
            "root_pipeline_id": root_pipeline_id or pipeline_id,
            "attempt": attempt,
        }
        adapter = logging.LoggerAdapter(logging.getLogger(f"flink_tasks.task.{task_type}"), extra)
        return cls(task_id, task_type, pipeline_id, root_pipeline_id, attempt, adapter)
