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
    _requests: set[str] = field(default_factory=set, repr=False, compare=False)

    def pause_pipeline(self) -> None:
        """Pause the pipeline once this task succeeds, as `.wait()` on its entry would: nothing
        after the task starts (other chains of a running group go on) until `unpause`."""
        self._requests.add("pause_pipeline")

    @property
    def pause_requested(self) -> bool:
        """True once `pause_pipeline()` was called."""
        return "pause_pipeline" in self._requests

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
