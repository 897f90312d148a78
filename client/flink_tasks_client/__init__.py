"""flink-tasks-client: submit flink-tasks pipelines over Kafka and await their results.

from flink_tasks_client import FlinkTasksClient

async with FlinkTasksClient("127.0.0.1:19092") as client:
    result = await client.submit_async(pipeline)
"""

from flink_tasks.errors import (
    ActionError,
    ClientError,
    FlinkTasksError,
    PipelineCancelledError,
    PipelineDefinitionError,
    PipelineNotFoundError,
    RequestTooLargeError,
    ResultTimeoutError,
    SerializationError,
    TaskError,
    TaskException,
    TransportError,
)
from flink_tasks.kafka_security import KafkaSecurity
from flink_tasks.records import PipelineEvent, SubmittedPipeline
from flink_tasks.types import PipelineStatus
from flink_tasks_client._client import FlinkTasksClient
from flink_tasks_client._events import EventStream
from flink_tasks_client._link import ClientHealth
from flink_tasks_client._listing import PipelineSummary, list_pipelines
from flink_tasks_client._reuse import REUSE_POLICIES, PipelineExistsError, Reuse
from flink_tasks_client.settings import DEFAULT_MAX_REQUEST_BYTES, ClientSettings

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "REUSE_POLICIES",
    "ActionError",
    "ClientError",
    "ClientHealth",
    "ClientSettings",
    "EventStream",
    "FlinkTasksClient",
    "FlinkTasksError",
    "KafkaSecurity",
    "PipelineCancelledError",
    "PipelineDefinitionError",
    "PipelineEvent",
    "PipelineExistsError",
    "PipelineNotFoundError",
    "PipelineStatus",
    "PipelineSummary",
    "RequestTooLargeError",
    "ResultTimeoutError",
    "Reuse",
    "SerializationError",
    "SubmittedPipeline",
    "TaskError",
    "TaskException",
    "TransportError",
    "__version__",
    "list_pipelines",
]
