"""The worker: serves task functions and the pipeline function to StateFun over HTTP."""

from flink_tasks.worker.functions import Worker
from flink_tasks.worker.server import WorkerServer
from flink_tasks.worker.task_runner import PoolSettings, TaskRunner, WorkerHooks

__all__ = ["PoolSettings", "TaskRunner", "Worker", "WorkerHooks", "WorkerServer"]
