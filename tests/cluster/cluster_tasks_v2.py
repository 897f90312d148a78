"""The next version of the cluster tests' worker code: every task of tests.cluster.cluster_tasks
unchanged (pipelines in flight keep their meaning) and one new task."""

from __future__ import annotations

from flink_tasks import FlinkTasks
from tests.cluster import cluster_tasks

tasks = FlinkTasks().include(cluster_tasks.tasks)

WORKER_VERSION = 2


@tasks.bind()
def worker_version() -> int:
    return WORKER_VERSION
