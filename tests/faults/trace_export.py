"""A `serve --hooks` module for the tracing test: it sets OpenTelemetry's tracer provider of each
worker process to write every ended span, one JSON object a line, to
``$FLINK_TASKS_TEST_SPAN_DIR/spans-<pid>.jsonl``, so the test reads the spans of all processes.

This is how a user sets up tracing too (with an OTLP exporter instead of the file)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

SPAN_DIR_VAR = "FLINK_TASKS_TEST_SPAN_DIR"


class JsonLinesExporter(SpanExporter):
    """Appends each span to a file of this process (flushed at once, so a reader sees it)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / f"spans-{os.getpid()}.jsonl"
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            record = json.loads(span.to_json())
            record["pid"] = os.getpid()
            lines.append(json.dumps(record, separators=(",", ":")) + "\n")
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.writelines(lines)
        return SpanExportResult.SUCCESS


def read_spans(folder: Path) -> list[dict[str, object]]:
    """Every span the worker processes wrote to `folder`."""
    spans = []
    for path in sorted(folder.glob("spans-*.jsonl")):
        spans += [json.loads(line) for line in path.read_text().splitlines() if line]
    return spans


if os.environ.get(SPAN_DIR_VAR):
    _provider = TracerProvider()
    _provider.add_span_processor(
        SimpleSpanProcessor(JsonLinesExporter(Path(os.environ[SPAN_DIR_VAR])))
    )
    trace.set_tracer_provider(_provider)

hooks: list[object] = []  # only the tracer provider is set up here


def memory_exporter() -> InMemorySpanExporter:
    """A new in-memory exporter on this process's SDK tracer provider (set up once)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def hex_id(value: int, digits: int) -> str:
    """An id as OpenTelemetry's JSON writes it (``0x`` + zero-padded hex)."""
    return f"0x{value:0{digits}x}"
