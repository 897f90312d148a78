"""flink-tasks: Celery-like tasks and pipelines on Apache Flink Stateful Functions."""

from flink_tasks.errors import (
    ActionError,
    FlinkTasksError,
    MemoryLimitError,
    NonRetryableError,
    PipelineCancelledError,
    PipelineDefinitionError,
    PipelineNotFoundError,
    SerializationError,
    TaskError,
    TaskException,
    TaskNotFoundError,
    WorkerLostError,
)
from flink_tasks.pipeline import PipelineBuilder, in_parallel
from flink_tasks.pipeline.refs import TaskRef
from flink_tasks.registry import FlinkTasks, Task
from flink_tasks.types import PipelineStatus, RetryPolicy
from flink_tasks.value_types import register_type

__version__ = "0.1.0"

__all__ = [
    "ActionError",
    "FlinkTasks",
    "FlinkTasksError",
    "MemoryLimitError",
    "NonRetryableError",
    "PipelineBuilder",
    "PipelineCancelledError",
    "PipelineDefinitionError",
    "PipelineNotFoundError",
    "PipelineStatus",
    "RetryPolicy",
    "SerializationError",
    "Task",
    "TaskError",
    "TaskException",
    "TaskNotFoundError",
    "TaskRef",
    "WorkerLostError",
    "__version__",
    "in_parallel",
    "register_type",
]
