"""The worker's Prometheus metrics (``prometheus_client``), served at ``GET /metrics``.

Each `Metrics` has a registry of its own, so several workers in one process (tests) never share
counts. Under ``serve --workers N`` the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before it
starts the worker processes: ``prometheus_client`` then keeps every value in a per-process file
there, and whichever process answers a scrape merges the files of all of them, so one scrape
shows the whole worker. Without that variable a worker process counts in memory.

Everything here is recorded in the worker process (the endpoint loop), never in a pool child, so
the process pool needs no multiprocess set-up of its own. Names and units follow Prometheus'
conventions; docs/observability.md lists them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from flink_tasks.worker.batch_metrics import BatchTally

MULTIPROC_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"

#: seconds; tasks run from milliseconds to hours (leased tasks)
TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
PIPELINE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600)
#: invocations in one request-reply batch of the pipeline function
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def multiprocess_dir() -> str | None:
    """The multiprocess directory this process writes to, if any."""
    return os.environ.get(MULTIPROC_DIR_VAR) or None


@dataclass(frozen=True)
class TaskSeries:
    """The labelled series one task type updates per attempt (looked up once per type: a
    ``labels()`` call takes a lock and builds its key, on every task otherwise)."""

    in_progress: Any
    retries: Any
    queue_wait: Any
    succeeded: Any
    failed: Any


class Metrics:
    """The worker's metric families; label values are documented on each."""

    def task_series(self, task_type: str) -> TaskSeries:
        """The series of `task_type` (cached)."""
        series = self._task_series.get(task_type)
        if series is None:
            series = self._task_series[task_type] = TaskSeries(
                in_progress=self.tasks_in_progress.labels(task_type),
                retries=self.task_retries.labels(task_type),
                queue_wait=self.task_queue_wait.labels(task_type),
                succeeded=self.task_duration.labels(task_type, "succeeded"),
                failed=self.task_duration.labels(task_type, "failed"),
            )
        return series

    def __init__(self) -> None:
        self._task_series: dict[str, TaskSeries] = {}
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.task_duration = Histogram(
            "flink_tasks_task_duration_seconds",
            "Time from a task attempt's body starting to its result (from its receipt for one "
            "that failed before it started), by task type and outcome (succeeded, failed).",
            ["task_type", "outcome"],
            buckets=TASK_BUCKETS,
            registry=registry,
        )
        self.task_queue_wait = Histogram(
            "flink_tasks_task_queue_seconds",
            "Time a task attempt waited in the worker for a pool thread or process before its "
            "body started, by task type.",
            ["task_type"],
            buckets=TASK_BUCKETS,
            registry=registry,
        )
        self.tasks_in_progress = Gauge(
            "flink_tasks_tasks_in_progress",
            "Task attempts running in the worker now, by task type.",
            ["task_type"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.task_retries = Counter(
            "flink_tasks_task_retries",
            "Task attempts after the first (retries), by task type.",
            ["task_type"],
            registry=registry,
        )
        self.tasks_detached = Counter(
            "flink_tasks_tasks_detached",
            "Long task attempts answered with a lease (reported through the task-reports topic).",
            ["task_type"],
            registry=registry,
        )
        self.tasks_redelivered = Counter(
            "flink_tasks_tasks_redelivered",
            "Task attempts sent again by a pipeline because the worker running them was lost "
            "while they ran on a lease taken at a task bucket's batch wait.",
            ["task_type"],
            registry=registry,
        )
        self.pipeline_duration = Histogram(
            "flink_tasks_pipeline_duration_seconds",
            "Time from a pipeline address starting to run to its end, by level (root, child) "
            "and outcome (completed, failed, cancelled).",
            ["level", "outcome"],
            buckets=PIPELINE_BUCKETS,
            registry=registry,
        )
        self.pipelines_started = Counter(
            "flink_tasks_pipelines_started",
            "Pipeline addresses that started to run, by level (root, child).",
            ["level"],
            registry=registry,
        )
        self.pipeline_batch_size = Histogram(
            "flink_tasks_pipeline_batch_size",
            "Invocations in one request-reply batch of the pipeline function.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.task_batch_size = Histogram(
            "flink_tasks_task_batch_size",
            "Task attempts in one request-reply batch of a task function (1 without task buckets).",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.pipeline_messages = Counter(
            "flink_tasks_pipeline_messages",
            "Messages the pipeline function handled, by message type.",
            ["message_type"],
            registry=registry,
        )
        #: the two families above, counted per batch in plain ints and flushed in bulk
        self.batches = BatchTally(self.pipeline_messages, self.pipeline_batch_size)
        self.rejected_messages = Counter(
            "flink_tasks_rejected_messages",
            "Messages refused (logged, never applied), by reason: unparsable, unknown_type, "
            "no_reply_address, invalid_request, egress_topic, protocol_error.",
            ["reason"],
            registry=registry,
        )
        self.unreadable_failures = Counter(
            "flink_tasks_unreadable_failures",
            "Unparsable messages from our own functions turned into a failure, by message type.",
            ["message_type"],
            registry=registry,
        )
        self.pool_children_lost = Counter(
            "flink_tasks_pool_children_lost",
            "Process-pool children that died during a task, by reason: crash, timeout, memory.",
            ["reason"],
            registry=registry,
        )
        self.task_loops_replaced = Counter(
            "flink_tasks_task_loops_replaced",
            "Async task event loops replaced because a task body blocked them.",
            registry=registry,
        )

    def value(self, name: str, **labels: str) -> float:
        """One sample's value as this process sees it (0 if never recorded); for tests."""
        self.batches.flush()
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    def render(self) -> bytes:
        """Every family in the Prometheus text format: all worker processes' values merged
        in multiprocess mode (any metric a hook made too); this process's otherwise, followed by
        ``prometheus_client``'s default registry (process metrics and a hook's own metrics)."""
        self.batches.flush()
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry) + generate_latest(REGISTRY)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
