"""The wire contract, in one place: what the worker, the runtime's module renderer, the
StateFun adapter and the client must agree on. Change a name here and every side follows.

Messages themselves are in proto/flink_tasks/_proto (package `flink_tasks.v1`).
"""

from __future__ import annotations

# ---------------------------------------------------------------- StateFun function types
NAMESPACE = "flink_tasks"
PIPELINE_FUNCTION = f"{NAMESPACE}/pipeline"
"""The pipeline function (the engine), keyed by pipeline id."""
DEFAULT_TASK_NAMESPACE = "flink_tasks"
DEFAULT_WORKER_NAME = "worker"
"""Task functions are `<namespace>/<worker name>`, keyed by task address."""

# ---------------------------------------------------------------- ingress and egress ids
INGRESS_ID = f"{NAMESPACE}/ingress"
"""The Kafka ingress: requests, actions and task reports, all routed to PIPELINE_FUNCTION."""
EGRESS_ID = f"{NAMESPACE}/kafka"
"""The one Kafka egress replies and events are written to (any topic)."""

# ---------------------------------------------------------------- message type names
TYPE_PREFIX = "flink_tasks.v1"
PIPELINE_REQUEST = f"{TYPE_PREFIX}/PipelineRequest"
ACTION_REQUEST = f"{TYPE_PREFIX}/ActionRequest"
TASK_REQUEST = f"{TYPE_PREFIX}/TaskRequest"
TASK_RESULT = f"{TYPE_PREFIX}/TaskResult"
TASK_REQUESTS = f"{TYPE_PREFIX}/TaskRequests"
"""Several `TaskRequest`s for one task address (task buckets only)."""
TASK_RESULTS = f"{TYPE_PREFIX}/TaskResults"
"""Several `TaskResult`s for one pipeline address (from a call that ran several tasks)."""
PIPELINE_MESSAGE = f"{TYPE_PREFIX}/PipelineMessage"
WORKER_REPORT = f"{TYPE_PREFIX}/WorkerReport"


def state_type(cell: str) -> str:
    """The StateFun type name of a pipeline-function state cell."""
    return f"{TYPE_PREFIX}/{cell}"


# ---------------------------------------------------------------- Kafka topics (defaults)
DEFAULT_REQUEST_TOPIC = "flink-tasks.requests"
"""Client → pipeline function: `PipelineRequest`, keyed by pipeline id."""
DEFAULT_ACTION_TOPIC = "flink-tasks.actions"
"""Client → pipeline function: `ActionRequest`, keyed by pipeline id."""
DEFAULT_REPLY_TOPIC = "flink-tasks.replies"
"""Pipeline function → client: `Reply`, keyed by pipeline id."""
DEFAULT_EVENTS_TOPIC = "flink-tasks.events"
"""Pipeline function → readers: `PipelineEvent`, keyed by root pipeline id."""
DEFAULT_TASK_REPORTS_TOPIC = "flink-tasks.task-reports"
"""Worker → pipeline function: `WorkerReport` (heartbeats and results of long tasks)."""
