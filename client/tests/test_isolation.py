"""The client distribution stays on the client side of the architecture."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = (
    "aiohttp",
    "statefun",
    "flink_tasks.worker",
    "flink_tasks.runtime",
    "flink_tasks.statefun",
)


def test_client_imports_nothing_of_the_worker_side() -> None:
    code = (
        "import json, sys, flink_tasks_client, flink_tasks_client._client, "
        "flink_tasks_client._events, flink_tasks_client._kafka\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True
    )
    loaded = json.loads(out.stdout)
    offending = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert offending == []


def test_public_api() -> None:
    import flink_tasks_client

    assert sorted(flink_tasks_client.__all__) == [
        "ActionError",
        "ClientError",
        "ClientHealth",
        "ClientSettings",
        "DEFAULT_MAX_REQUEST_BYTES",
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
        "REUSE_POLICIES",
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
    from flink_tasks import errors

    assert flink_tasks_client.TaskError is errors.TaskError
    assert issubclass(flink_tasks_client.RequestTooLargeError, errors.ClientError)
