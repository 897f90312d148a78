"""`flink-tasks serve` as users run it, driven over its StateFun endpoint: middleware given with
``--hooks`` wraps each body where it runs (pool child, pool thread, task loop), every record
logged during a task carries the task's ids in ``--log-format json`` (pool children included),
and a single worker process serves its metrics without a multiprocess folder."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from statefun.request_reply_pb2 import Address, FromFunction, ToFunction, TypedValue

from flink_tasks import serialization, wire
from flink_tasks._proto import messages_pb2
from flink_tasks.runtime.workers import WorkerProcesses
from tests.deploy._ports import free_ports

ROOT = Path(__file__).resolve().parents[2]
TARGET = "tests.unit.hook_tasks:tasks"
HOOKS = "tests.unit.hook_tasks:hooks"


def call_task(url: str, task_type: str, task_id: str) -> messages_pb2.TaskResult:
    """What StateFun sends a task function: one invocation carrying a `TaskRequest`."""
    request = messages_pb2.TaskRequest(
        task_id=task_id,
        task_type=task_type,
        attempt=1,
        pipeline_id=f"pipe-{task_id}",
        root_pipeline_id=f"root-{task_id}",
        reply_id=f"pipe-{task_id}",
    )
    namespace, name = "flink_tasks", "worker"  # the registry's task function
    batch = ToFunction()
    batch.invocation.target.CopyFrom(Address(namespace=namespace, type=name, id=task_id))
    invocation = batch.invocation.invocations.add()
    invocation.argument.CopyFrom(
        TypedValue(typename=wire.TASK_REQUEST, has_value=True, value=request.SerializeToString())
    )
    http = urllib.request.Request(
        f"{url}/statefun/{name}",
        data=batch.SerializeToString(),
        headers={"Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(http, timeout=30) as resp:
        reply = FromFunction.FromString(resp.read())
    (message,) = reply.invocation_result.outgoing_messages
    assert message.argument.typename == wire.TASK_RESULT
    return messages_pb2.TaskResult.FromString(message.argument.value)


def json_records(log_file: Path) -> list[dict[str, Any]]:
    records = []
    for line in log_file.read_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_hooks_logs_and_metrics_of_one_worker(tmp_path: Path, pool: str) -> None:
    (port,) = free_ports(1)
    log_file = tmp_path / "serve.log"
    (bootstrap_port,) = free_ports(1)  # no broker: every task here answers inline
    workers = WorkerProcesses(
        TARGET,
        port=port,
        log_file=log_file,
        cwd=ROOT,
        log_format="json",
        extra_args=("--pool", pool, "--pool-size", "1", "--hooks", HOOKS),
        env={
            **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
            "FLINK_TASKS_BOOTSTRAP_SERVERS": f"127.0.0.1:{bootstrap_port}",
        },
    ).start()
    try:
        (worker_pid,) = workers.worker_pids()
        sync = call_task(workers.url, "tests.unit.hook_tasks.in_session", "t-sync")
        async_ = call_task(workers.url, "tests.unit.hook_tasks.in_session_async", "t-async")
        failed = call_task(workers.url, "tests.unit.hook_tasks.fails", "t-fail")
        with urllib.request.urlopen(f"{workers.url}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
    finally:
        assert workers.stop() == 0

    # the middleware ran where the body ran: the body saw the session it opened
    text = serialization.decode(sync.result)
    session_pid = int(text.split("in pid ")[1].split(",")[0])
    body_pid = int(text.rsplit("in pid ", 1)[1])
    assert session_pid == body_pid
    assert (body_pid != worker_pid) if pool == "process" else (body_pid == worker_pid)
    assert serialization.decode(async_.result) == "async session of t-async"
    # ...and acted: the body's failure came back as the middleware's rollback
    assert failed.error.exception_type == "tests.unit.hook_tasks.RolledBackError"
    assert failed.error.exception_message == "rolled back: no such row"

    records = json_records(log_file)
    by_message = {r["message"]: r for r in records}
    for message, task_id, task_type in [
        ("session opened", "t-fail", "fails"),
        ("sync body ran", "t-sync", "in_session"),
        ("async body ran", "t-async", "in_session_async"),
        ("about to fail", "t-fail", "fails"),
    ]:
        record = by_message[message]
        assert record["task_id"] == task_id
        assert record["task_type"] == f"tests.unit.hook_tasks.{task_type}"
        assert record["pipeline_id"] == f"pipe-{task_id}"
        assert record["root_pipeline_id"] == f"root-{task_id}"
        assert record["attempt"] == 1
        assert record["logger"] == "tests.hook_tasks"
    assert by_message["sync body ran"]["process"] == body_pid
    # records outside a task carry no task fields
    serving = next(r for r in records if r["message"].startswith("worker pid"))
    assert "task_id" not in serving and serving["process"] == worker_pid

    samples = {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    assert "# TYPE flink_tasks_task_duration_seconds histogram" in metrics
    assert "# HELP flink_tasks_rejected_messages_total" in metrics
    for task_type, outcome in [
        ("in_session", "succeeded"),
        ("in_session_async", "succeeded"),
        ("fails", "failed"),
    ]:
        labels = f'outcome="{outcome}",task_type="tests.unit.hook_tasks.{task_type}"'
        assert samples[f"flink_tasks_task_duration_seconds_count{{{labels}}}"] == 1
        # the observer hook's own metric, from the worker process
        assert (
            samples[f'hook_tasks_finished_total{{task_type="tests.unit.hook_tasks.{task_type}"}}']
            == 1
        )
    assert samples['flink_tasks_tasks_in_progress{task_type="tests.unit.hook_tasks.fails"}'] == 0
