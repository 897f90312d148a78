"""Test helpers for users (and for flink-tasks' own tests): `PipelineEnvironment` runs whole
pipelines (in-process, optionally on virtual time, or on the real runtime); `TaskEnvironment` runs
one task without a pipeline."""

from flink_tasks.testing.environment import InProcessClient, PipelineClient, PipelineEnvironment
from flink_tasks.testing.task_environment import TaskEnvironment, TaskOutcome
from flink_tasks.testing.virtual_time import VirtualClock

__all__ = [
    "InProcessClient",
    "PipelineClient",
    "PipelineEnvironment",
    "TaskEnvironment",
    "TaskOutcome",
    "VirtualClock",
]
