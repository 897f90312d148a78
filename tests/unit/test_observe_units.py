"""Tracing and the dashboard's model without a runtime: tracing costs nothing when off (not even
the import), the trace context travels through the engine's messages, and the dashboard folds
events into the list and tree the page shows."""

from __future__ import annotations

import os
import subprocess
import sys

from flink_tasks_client.dashboard.model import Board

from flink_tasks import in_parallel
from flink_tasks._proto import events_pb2, messages_pb2
from flink_tasks.types import PipelineStatus
from tests.pipelines import add, multiply


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
