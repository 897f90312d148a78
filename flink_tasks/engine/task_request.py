"""The `TaskRequest` of one attempt of a task entry: what the pipeline function sends, and what
`flink_tasks.testing.TaskEnvironment` runs a task with, built in one place."""

from __future__ import annotations

from flink_tasks._proto import messages_pb2, pipeline_pb2, values_pb2


def task_request(
    task: pipeline_pb2.TaskEntry,
    args: values_pb2.ValueList,
    kwargs: values_pb2.ValueMap,
    *,
    pipeline_id: str,
    root_pipeline_id: str,
    attempt: int,
    state: values_pb2.Value | None = None,
    invocation: int = 0,
    slot: int = 0,
    expires_at_ms: int = 0,
    trace_context: messages_pb2.TraceContext | None = None,
) -> messages_pb2.TaskRequest:
    """The request for attempt `attempt` of `task`, sent by the pipeline at `pipeline_id`."""
    request = messages_pb2.TaskRequest(
        task_id=task.task_id,
        task_type=task.task_type,
        args=args,
        kwargs=kwargs,
        reply_id=pipeline_id,
        attempt=attempt,
        timeout_s=task.timeout_s,
        pipeline_id=pipeline_id,
        root_pipeline_id=root_pipeline_id,
        invocation=invocation,
        not_fruitful=task.not_fruitful,
        slot=slot,
    )
    if expires_at_ms:
        request.expires_at_ms = expires_at_ms
    if state is not None:
        request.state.CopyFrom(state)
        request.has_state = True
    if task.has_retry_policy:
        request.retry_policy.CopyFrom(task.retry_policy)
        request.has_retry_policy = True
    if trace_context is not None:
        request.trace_context.CopyFrom(trace_context)
    return request
