"""What every front-end sends: one validator and encoder of requests, shared by the Kafka
client, the in-process client and `PipelineEnvironment`, so that bad input is refused the same
way (same exception, same message) before anything is sent, wherever a pipeline runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flink_tasks._proto import messages_pb2
from flink_tasks.errors import PipelineDefinitionError, RequestTooLargeError
from flink_tasks.pipeline.builder import PipelineBuilder, pipeline_id_problem

#: Kafka's default limit on one record: the broker's ``message.max.bytes`` / the topic's
#: ``max.message.bytes`` (1 MiB + 12 bytes) and the producer's ``max.request.size`` (1 MiB).
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024

#: What a record needs beyond its key and value: the record batch header, record framing and
#: varints. Requests are checked against ``max_request_bytes`` (key + value) and the producer
#: is allowed ``max_request_bytes + RECORD_HEADROOM_BYTES``.
RECORD_HEADROOM_BYTES = 4 * 1024

#: The default request limit: Kafka's default record size minus the headroom, so a request
#: that passes the client-side check is never refused by a default-configured broker.
DEFAULT_MAX_REQUEST_BYTES = KAFKA_DEFAULT_MAX_MESSAGE_BYTES - RECORD_HEADROOM_BYTES


def check_timeout(timeout: timedelta | float | None, default: timedelta) -> timedelta:
    """``timeout`` as a positive `timedelta` (a number is seconds; None is ``default``).

    Raises:
        TypeError: not a timedelta or a number.
        ValueError: zero or negative.
    """
    if timeout is None:
        return default
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        timeout = timedelta(seconds=timeout)
    if not isinstance(timeout, timedelta):
        raise TypeError(
            f"timeout must be a datetime.timedelta (e.g. timedelta(seconds=30)) or a number "
            f"of seconds, got {timeout!r}"
        )
    if timeout <= timedelta(0):
        raise ValueError(f"timeout must be positive, got {timeout}")
    return timeout


def check_pipeline_id(pipeline_id: Any) -> str:
    """The id an action names; `ValueError` unless it is a non-empty string."""
    if not isinstance(pipeline_id, str) or not pipeline_id:
        raise ValueError(f"pipeline_id must be a non-empty string, got {pipeline_id!r}")
    return pipeline_id


def encode_pipeline_request(
    pipeline: Any,
    *,
    reply_topic: str,
    reply_id: str,
    events_topic: str,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    trace_context: messages_pb2.TraceContext | None = None,
) -> bytes:
    """A pipeline's `PipelineRequest` bytes, after checking that it may be submitted.

    ``trace_context`` (the submit span's, when tracing is on) travels with the request.

    Raises:
        TypeError: ``pipeline`` is not a pipeline.
        PipelineDefinitionError: the pipeline is empty or its id cannot be used.
        SerializationError: an argument or the initial state cannot be serialized.
        RequestTooLargeError: key and value together exceed ``max_request_bytes``.
    """
    if not isinstance(pipeline, PipelineBuilder):
        raise TypeError(
            f"submit takes a pipeline (e.g. task.send(...)), got {type(pipeline).__name__}"
        )
    id_problem = pipeline_id_problem(pipeline.id)
    if id_problem is not None:
        raise PipelineDefinitionError(f"{id_problem}: {pipeline!r}")
    if not pipeline.entries:
        raise PipelineDefinitionError(
            "the pipeline is empty: start it with task.send(...) or in_parallel([...])"
        )
    request = messages_pb2.PipelineRequest(
        pipeline=pipeline.to_proto(),
        reply_topic=reply_topic,
        reply_id=reply_id,
        events_topic=events_topic,
    )
    if trace_context is not None:
        request.trace_context.CopyFrom(trace_context)
    value = request.SerializeToString()
    size = len(value) + len(pipeline.id.encode("utf-8"))
    if size > max_request_bytes:
        default_note = (
            " (the default: Kafka's 1 MiB record limit less headroom)"
            if max_request_bytes == DEFAULT_MAX_REQUEST_BYTES
            else ""
        )
        raise RequestTooLargeError(
            f"the request for pipeline {pipeline.id!r} is {size} bytes, over "
            f"max_request_bytes={max_request_bytes}{default_note}. Pass large data by reference "
            "(e.g. a URL or a storage key), or raise max_request_bytes together with the "
            "broker's message.max.bytes and the topic's max.message.bytes."
        )
    return value


def encode_action_request(
    pipeline_id: Any, action: int, *, reply_topic: str, reply_id: str
) -> bytes:
    """An `ActionRequest`'s bytes; `ValueError` for a bad id or an unknown action."""
    check_pipeline_id(pipeline_id)
    if action not in messages_pb2.Action.values():
        raise ValueError(f"unknown action {action!r}")
    request = messages_pb2.ActionRequest(
        pipeline_id=pipeline_id,
        action=action,  # type: ignore[arg-type]
        reply_topic=reply_topic,
        reply_id=reply_id,
    )
    return request.SerializeToString()
