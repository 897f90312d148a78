"""Tracing and the dashboard without a runtime: tracing costs nothing when off (not even the
import), the engine carries the trace context to every task and child pipeline, the dashboard
folds events into the list and tree the page shows, and its command is registered."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from flink_tasks_client.dashboard.model import Board

from flink_tasks import in_parallel
from flink_tasks._proto import events_pb2, messages_pb2
from flink_tasks.engine import effects as fx
from flink_tasks.engine import step
from flink_tasks.engine.state import AddressState
from flink_tasks.types import PipelineStatus
from tests.pipelines import add, multiply
from tests.unit.engine.harness import Engine, group, ok, request, task


def test_tracing_off_imports_no_opentelemetry_and_on_without_it_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "from flink_tasks.worker import Worker\n"
        "from flink_tasks_client import FlinkTasksClient\n"
        "from tests.pipelines import tasks\n"
        "Worker(tasks)\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
        "sys.modules['opentelemetry'] = None  # as if the extra were not installed\n"
        "try:\n"
        "    Worker(tasks, tracing=True)\n"
        "except ModuleNotFoundError as err:\n"
        "    print(err)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FLINK_TASKS_TRACING"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (
        "tracing needs OpenTelemetry (opentelemetry is not installed): "
        "pip install 'flink-tasks[tracing]'"
    )


def _event(root: str, address: str, ms: int, **kind: object) -> events_pb2.PipelineEvent:
    return events_pb2.PipelineEvent(
        pipeline_id=address, root_pipeline_id=root, timestamp_ms=ms, **kind
    )


def test_board_folds_a_fan_out_into_list_and_tree() -> None:
    pipeline = in_parallel(
        [multiply.send(i, 2) for i in range(20)], max_parallelism=4
    ).continue_with(add, 1)
    structure = pipeline.to_proto()
    group_id = structure.entries[0].group.group_id
    board = Board()
    board.apply(
        _event(
            pipeline.id,
            pipeline.id,
            1000,
            pipeline_created=events_pb2.PipelineCreated(pipeline=structure, task_count=21),
        )
    )
    board.apply(
        _event(
            pipeline.id,
            pipeline.id,
            1001,
            status_changed=events_pb2.PipelineStatusChanged(
                status=messages_pb2.PIPELINE_STATUS_RUNNING
            ),
        )
    )
    board.apply(
        _event(
            pipeline.id,
            pipeline.id,
            1500,
            group_progress=events_pb2.GroupProgress(group_id=group_id, completed=5, total=20),
        )
    )
    (row,) = board.summaries(10)
    assert row["id"] == pipeline.id and row["status"] == "RUNNING"
    assert (row["completed"], row["total"], row["tasks"]) == (5, 20, 21)
    assert row["task_types"] == sorted({multiply.type_name, add.type_name})
    assert (row["created_ms"], row["updated_ms"]) == (1000, 1500)

    detail = board.detail(pipeline.id)
    assert detail is not None
    group, continuation = detail["structure"]
    assert group["kind"] == "group" and group["size"] == 20 and group["max_parallelism"] == 4
    assert (group["completed"], group["total"]) == (5, 20)
    assert len(group["chains"]) == 12 and group["more_chains"] == 8
    assert group["chains"][0] == [
        {
            "kind": "task",
            "label": multiply.type_name,
            "task_type": multiply.type_name,
            "task_id": structure.entries[0].group.chains[0].entries[0].task.task_id,
            "role": "task",
        }
    ]
    assert continuation["kind"] == "task" and continuation["task_type"] == add.type_name

    # staged: the stages' progress is counted, not the parent group's again
    board.apply(
        _event(
            pipeline.id,
            pipeline.id + ":s0",
            1600,
            group_progress=events_pb2.GroupProgress(
                group_id=group_id + ".0", completed=3, total=10
            ),
        )
    )
    board.apply(
        _event(
            pipeline.id,
            pipeline.id + ":s1",
            1700,
            group_progress=events_pb2.GroupProgress(
                group_id=group_id + ".1", completed=10, total=10
            ),
        )
    )
    assert board.summaries(10)[0]["completed"] == 13
    detail = board.detail(pipeline.id)
    assert detail is not None
    assert [s["group_id"] for s in detail["structure"][0]["stages"]] == [
        group_id + ".0",
        group_id + ".1",
    ]

    board.apply(
        _event(
            pipeline.id,
            pipeline.id,
            2000,
            status_changed=events_pb2.PipelineStatusChanged(
                status=messages_pb2.PIPELINE_STATUS_FAILED
            ),
        )
    )
    root = board.get(pipeline.id)
    assert root is not None and root.status == PipelineStatus.FAILED
    version = board.version
    board.set_error(pipeline.id, {"task_id": "t", "traceback": "Traceback ..."})
    assert board.version == version + 1
    detail = board.detail(pipeline.id)
    assert detail is not None and detail["error"]["traceback"] == "Traceback ..."


def test_board_forgets_the_oldest_finished_pipelines_past_its_limit() -> None:
    board = Board(limit=3)
    for i in range(5):
        pid = f"p{i}"
        board.apply(
            _event(
                pid,
                pid,
                i,
                status_changed=events_pb2.PipelineStatusChanged(
                    status=messages_pb2.PIPELINE_STATUS_COMPLETED
                ),
            )
        )
    assert [row["id"] for row in board.summaries(10)] == ["p4", "p3", "p2"]


def test_the_dashboard_command_comes_from_the_client_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.metadata
    from pathlib import Path

    import tomllib
    from flink_tasks_client.dashboard import cmd_dashboard

    from flink_tasks import cli

    pyproject = Path(__file__).resolve().parents[2] / "client" / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["project"]["entry-points"][cli.COMMANDS_GROUP]
    found = [
        importlib.metadata.EntryPoint(name=name, value=value, group=cli.COMMANDS_GROUP)
        for name, value in declared.items()
    ]
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group: found if group == cli.COMMANDS_GROUP else [],
    )
    args = cli.build_parser().parse_args(["dashboard", "--port", "8090", "--since", "2h"])
    assert args.handler is cmd_dashboard
    assert (args.host, args.port, args.since, args.limit) == (
        "127.0.0.1",
        8090,
        timedelta(hours=2),
        200,
    )


class _Router:
    """Steps the engine's addresses, delivering pipeline messages between them at once."""

    def __init__(self) -> None:
        self.engine = Engine()
        self.tasks: dict[str, messages_pb2.TaskRequest] = {}

    def deliver(self, address: str, message: Any) -> None:
        pending = [(address, message)]
        while pending:
            address, message = pending.pop(0)
            state = self.engine.states.setdefault(address, AddressState())
            effects = step(
                address,
                state,
                message,
                self.engine.settings,
                clock=lambda: self.engine.now,
                ids=self.engine.ids,
            )
            state.raw.update(state.encoded())
            state.dirty.clear()
            for effect in effects:
                if isinstance(effect, fx.SendTask):
                    self.tasks[effect.request.task_id] = effect.request
                elif isinstance(effect, fx.SendPipelineMessage) and not effect.delay_ms:
                    pending.append((effect.pipeline_id, effect.message))


def _trace(span: str) -> messages_pb2.TraceContext:
    return messages_pb2.TraceContext(traceparent=f"00-{'1' * 32}-{span}-01", tracestate="k=v")


def test_the_trace_context_reaches_every_task_and_child_pipeline() -> None:
    router = _Router()
    submitted = request(group("g", [task("a")], [task("b"), task("c")]))
    submitted.trace_context.CopyFrom(_trace("2" * 16))
    router.deliver("P", submitted)
    assert set(router.tasks) == {"a", "b"}  # b's chain is a parked child pipeline
    assert {r.trace_context.traceparent for r in router.tasks.values()} == {
        submitted.trace_context.traceparent
    }
    b = router.tasks["b"]
    assert b.pipeline_id != "P"
    router.deliver(b.pipeline_id, ok("b", 1))
    assert router.tasks["c"].trace_context == submitted.trace_context

    # a task that returns a pipeline: that pipeline's tasks are children of the task's span
    orchestrated = messages_pb2.TaskResult(task_id="a", invocation=1, slot=1, attempt=1)
    orchestrated.pipeline.CopyFrom(request(task("d")).pipeline)
    orchestrated.pipeline.id = "ignored"
    orchestrated.trace_context.CopyFrom(_trace("3" * 16))
    router.deliver("P", orchestrated)
    assert router.tasks["d"].trace_context == orchestrated.trace_context


def test_without_tracing_no_trace_context_is_sent() -> None:
    router = _Router()
    router.deliver("P", request(group("g", [task("a")], [task("b"), task("c")])))
    assert not any(r.HasField("trace_context") for r in router.tasks.values())
