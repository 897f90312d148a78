"""Seeing what runs, on the real runtime with `flink-tasks serve --workers 2 --tracing`:

- tracing: the client's submit span and the task-attempt spans of both worker processes form one
  trace per submit, with the expected parent links (a fan-out of 10 with a continuation, and a
  task that returns a child pipeline);
- the dashboard (`flink-tasks dashboard`) in a real headless Chromium: it lists a running
  pipeline, its progress rises, a failed task's traceback shows, and its cancel button cancels.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flink_tasks import TaskError, in_parallel
from tests.faults import fault_tasks as ft
from tests.faults import long_tasks as lt
from tests.faults.harness import FaultStack, fault_stack
from tests.faults.trace_export import SPAN_DIR_VAR, hex_id, memory_exporter, read_spans

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(
        "ignore:.*is deprecated. Use files\\(\\) instead:DeprecationWarning"
    ),
]

FANOUT = 10


@pytest.fixture(scope="module")
def observed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FaultStack, Path]]:
    tmp = tmp_path_factory.mktemp("faults-observe")
    spans = tmp / "spans"
    spans.mkdir()
    with fault_stack(
        tmp,
        61900,
        serve_workers=2,
        serve_args=("--pool-size", "1", "--tracing", "--hooks", "tests.faults.trace_export:hooks"),
        serve_env={SPAN_DIR_VAR: str(spans)},
    ) as stack:
        yield stack, spans


def spans_of_trace(folder: Path, trace_id: str, count: int) -> list[dict[str, Any]]:
    """The worker spans of `trace_id`, once `count` of them are written (or 15 s passed)."""
    deadline = time.monotonic() + 15
    while True:
        found = [s for s in read_spans(folder) if s["context"]["trace_id"] == trace_id]  # type: ignore[index]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_a_submit_and_its_tasks_are_one_trace(observed_stack: tuple[FaultStack, Path]) -> None:
    stack, folder = observed_stack
    exporter = memory_exporter()
    client = stack.new_client(tracing=True)
    try:
        fan_out = in_parallel([lt.quick.send(i) for i in range(FANOUT)]).continue_with(ft.total)
        orchestrated = ft.recurse.send(0, 2)  # returns a child pipeline, which returns another
        failing = ft.unserializable_result.send()
        assert client.submit(fan_out).result(timeout=120) == sum(i * i for i in range(FANOUT))
        assert client.submit(orchestrated).result(timeout=120) == 2
        with pytest.raises(TaskError):
            client.submit(failing).result(timeout=120)
    finally:
        client.close()

    submits = {s.attributes["flink_tasks.pipeline_id"]: s for s in exporter.get_finished_spans()}
    assert set(submits) == {fan_out.id, orchestrated.id, failing.id}
    pids: set[int] = set()

    # the fan-out: 10 attempts and the continuation, each a child of the submit span
    submit = submits[fan_out.id]
    trace_id = hex_id(submit.context.trace_id, 32)
    spans = spans_of_trace(folder, trace_id, FANOUT + 1)
    assert sorted(s["name"] for s in spans) == sorted(
        [lt.quick.type_name] * FANOUT + [ft.total.type_name]
    )
    assert {s["parent_id"] for s in spans} == {hex_id(submit.context.span_id, 16)}
    assert {s["attributes"]["flink_tasks.root_pipeline_id"] for s in spans} == {fan_out.id}
    assert {s["attributes"]["flink_tasks.outcome"] for s in spans} == {"succeeded"}
    assert {s["kind"] for s in spans} == {"SpanKind.CONSUMER"}
    assert len({s["attributes"]["flink_tasks.task_id"] for s in spans}) == FANOUT + 1
    pids |= {s["pid"] for s in spans}

    # a task that returns a pipeline is the parent of that child pipeline's task spans
    submit = submits[orchestrated.id]
    spans = spans_of_trace(folder, hex_id(submit.context.trace_id, 32), 3)
    assert len(spans) == 3
    by_parent = {s["parent_id"]: s for s in spans}
    first = by_parent[hex_id(submit.context.span_id, 16)]
    second = by_parent[first["context"]["span_id"]]
    third = by_parent[second["context"]["span_id"]]
    assert [s["attributes"]["flink_tasks.outcome"] for s in (first, second, third)] == [
        "pipeline",
        "pipeline",
        "succeeded",
    ]
    assert first["attributes"]["flink_tasks.pipeline_id"] == orchestrated.id
    assert third["attributes"]["flink_tasks.pipeline_id"].startswith(orchestrated.id + ":")
    pids |= {s["pid"] for s in spans}

    # a failed attempt: outcome, exception type and its traceback on the span
    submit = submits[failing.id]
    (span,) = spans_of_trace(folder, hex_id(submit.context.trace_id, 32), 1)
    assert span["status"]["status_code"] == "ERROR"
    assert span["attributes"]["flink_tasks.outcome"] == "failed"
    assert span["attributes"]["flink_tasks.exception_type"] == "flink_tasks.SerializationError"
    (event,) = span["events"]
    assert "Traceback" in event["attributes"]["exception.stacktrace"]
    pids |= {span["pid"]}

    worker_pids = stack.worker.worker_pids()
    assert len(worker_pids) == 2 and pids == worker_pids  # one trace, two processes
    print(f"task spans written by worker processes: {sorted(pids)} of {sorted(worker_pids)}")
