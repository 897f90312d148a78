"""OpenTelemetry tracing of submits and task attempts (the optional ``tracing`` extra).

Off by default. When on, the client starts a span per submit and puts its W3C trace context in
the `PipelineRequest`; the pipeline function copies that context, as plain strings, into every
task request and child pipeline of the run (it never imports OpenTelemetry); the worker starts
one span per task attempt as a child of it. A task that returns a pipeline hands its own span's
context to that child pipeline. So one submit, its fan-outs and its children are one trace.

Spans go to OpenTelemetry's global tracer provider: configure it (exporter, sampler, resource) in
your process, e.g. in a ``serve --hooks`` module, which every worker process imports. This module
imports ``opentelemetry`` only when tracing is on, so a worker or client without it pays nothing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from flink_tasks._proto import messages_pb2

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["TRACING_VAR", "TaskTracer", "submit_span_context", "tracing_from_env"]

#: ``1`` / ``true``: the worker traces task attempts (``flink-tasks serve --tracing`` sets it).
TRACING_VAR = "FLINK_TASKS_TRACING"
TRACER_NAME = "flink_tasks"

#: span attributes (the ``flink_tasks.`` namespace)
PIPELINE_ID = "flink_tasks.pipeline_id"
ROOT_PIPELINE_ID = "flink_tasks.root_pipeline_id"
TASK_ID = "flink_tasks.task_id"
TASK_TYPE = "flink_tasks.task_type"
ATTEMPT = "flink_tasks.attempt"
OUTCOME = "flink_tasks.outcome"
EXCEPTION_TYPE = "flink_tasks.exception_type"


def tracing_from_env(environ: dict[str, str] | None = None) -> bool:
    """Whether ``FLINK_TASKS_TRACING`` turns tracing on."""
    value = (environ if environ is not None else os.environ).get(TRACING_VAR, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def missing_extra_error(exc: ModuleNotFoundError) -> ModuleNotFoundError:
    """A clear error when tracing is asked for without the extra installed."""
    return ModuleNotFoundError(
        f"tracing needs OpenTelemetry ({exc.name} is not installed): "
        "pip install 'flink-tasks[tracing]'"
    )


def _carrier(context: messages_pb2.TraceContext) -> dict[str, str]:
    carrier = {"traceparent": context.traceparent}
    if context.tracestate:
        carrier["tracestate"] = context.tracestate
    return carrier


def _trace_context(carrier: dict[str, str]) -> messages_pb2.TraceContext | None:
    if not carrier.get("traceparent"):
        return None  # no valid span (e.g. not sampled by a parent-based sampler)
    return messages_pb2.TraceContext(
        traceparent=carrier["traceparent"], tracestate=carrier.get("tracestate", "")
    )


def submit_span_context(pipeline_id: str) -> messages_pb2.TraceContext | None:
    """Start and end the client's submit span (a child of the caller's current span) and return
    its W3C context for the request, or None when it is not recorded."""
    try:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ModuleNotFoundError as exc:
        raise missing_extra_error(exc) from exc
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        "flink_tasks.submit",
        kind=trace.SpanKind.PRODUCER,
        attributes={PIPELINE_ID: pipeline_id, ROOT_PIPELINE_ID: pipeline_id},
    ):
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
    return _trace_context(carrier)


class TaskTracer:
    """Spans of task attempts in a worker process: one per attempt, from receipt to result."""

    def __init__(self) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ModuleNotFoundError as exc:
            raise missing_extra_error(exc) from exc
        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()
        self._tracer = trace.get_tracer(TRACER_NAME)

    def start(self, request: messages_pb2.TaskRequest) -> Span:
        """The attempt's span, a child of the context the pipeline carried (if any)."""
        parent = None
        if request.HasField("trace_context"):
            parent = self._propagator.extract(_carrier(request.trace_context))
        return self._tracer.start_span(
            request.task_type,
            context=parent,
            kind=self._trace.SpanKind.CONSUMER,
            attributes={
                PIPELINE_ID: request.pipeline_id,
                ROOT_PIPELINE_ID: request.root_pipeline_id,
                TASK_ID: request.task_id,
                TASK_TYPE: request.task_type,
                ATTEMPT: request.attempt or 1,
            },
        )

    def finish(self, span: Span, result: messages_pb2.TaskResult) -> None:
        """Record the outcome and end the span; a returned pipeline gets the span's context."""
        outcome = result.WhichOneof("outcome")
        if outcome == "error":
            error = result.error
            span.set_attribute(OUTCOME, "failed")
            span.set_attribute(EXCEPTION_TYPE, error.exception_type)
            span.add_event(
                "exception",
                {
                    "exception.type": error.exception_type,
                    "exception.message": error.exception_message,
                    "exception.stacktrace": error.stacktrace,
                },
            )
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, error.exception_type))
        elif outcome == "pipeline":
            span.set_attribute(OUTCOME, "pipeline")
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
            context = _trace_context(carrier)
            if context is not None:
                result.trace_context.CopyFrom(context)
        else:
            span.set_attribute(OUTCOME, "succeeded")
        span.end()

    def abandon(self, span: Span, reason: Any) -> None:
        """End the span of an attempt this process stopped waiting for (e.g. shutting down)."""
        span.set_attribute(OUTCOME, "abandoned")
        span.set_attribute("flink_tasks.reason", str(reason))
        span.end()
