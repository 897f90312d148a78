"""Issue 14 items 1, 5 and 7 on the real runtime (Kafka + StateFun + ``flink-tasks serve``), one
runtime for the module: a client process that never imports the worker's task module submits
pipelines built with stubs and refs; registered own types (a dataclass, a pydantic model) cross
as themselves through arguments, results and state; ``flink-tasks submit --task`` runs one task
by name from a shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.faults.harness import PROJECT_ROOT, FaultStack, fault_stack
from tests.refs_types import shared_types as shared
from tests.refs_types import worker_tasks as w

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(
        "ignore:.*is deprecated. Use files\\(\\) instead:DeprecationWarning"
    ),
]

M = w.MODULE
T = shared.__name__  # the types both sides import (not the task code)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with fault_stack(
        tmp_path_factory.mktemp("refs-types"),
        62700,
        serve_workers=1,
        serve_target=f"{M}:tasks",
    ) as s:
        yield s


def _client_env(stack: FaultStack) -> dict[str, str]:
    s = stack.settings
    return {
        **os.environ,
        "FLINK_TASKS_BOOTSTRAP_SERVERS": s.bootstrap_servers,
        "FLINK_TASKS_REQUEST_TOPIC": s.requests_topic,
        "FLINK_TASKS_ACTION_TOPIC": s.actions_topic,
        "FLINK_TASKS_REPLY_TOPIC": s.replies_topic,
        "FLINK_TASKS_EVENTS_TOPIC": s.events_topic,
        "FLINK_TASKS_DEFAULT_TIMEOUT": "120s",
        "FLINK_TASKS_PIPELINE_REUSE": "allow",
    }


def _run(stack: FaultStack, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=PROJECT_ROOT,
        env=_client_env(stack),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_a_client_without_the_worker_code_submits_by_name_and_own_types_cross(
    stack: FaultStack,
) -> None:
    done = _run(stack, "-m", "tests.refs_types.client_main")
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out.pop("worker_module_imported") is False
    assert out.pop("arithmetic") == 50
    assert out.pop("moved") == [f"{T}.Point", 11, 3, "a"]
    assert out.pop("filled") == [
        f"{T}.Order",
        {"sku": "a1", "quantity": 5, "points": [{"x": 0, "y": 1, "label": ""}]},
        f"{T}.Point",
    ]
    assert out.pop("state") == {
        "order": [
            f"{T}.Order",
            "Order(sku='a1', quantity=2, points=[Point(x=0, y=1, label='')])",
        ],
        "point": [f"{T}.Point", "Point(x=5, y=5, label='')"],
    }
    unregistered = out.pop("unregistered_argument")
    assert f"{T}.Unregistered cannot be serialized" in unregistered
    assert "flink_tasks.register_type(Unregistered)" in unregistered
    exception_type, message = out.pop("unregistered_result")
    assert exception_type == "flink_tasks.SerializationError"
    assert f"{T}.Unregistered cannot be serialized" in message
    assert "register_type(Unregistered)" in message
    unknown = out.pop("unknown_here")
    assert "'weather.Celsius', which is not registered in this process" in unknown
    assert out == {}


def test_own_types_reach_the_worker_as_its_own_classes(stack: FaultStack) -> None:
    order = shared.Order(sku="b2", quantity=1, points=[shared.Point(3, 4)])
    names = stack.client.submit_sync(w.type_names.send(shared.Point(0, 0), order, w.Celsius(1.5)))
    assert names == [f"{T}.Point", f"{T}.Order", f"{M}.Celsius"]
    stateful = (
        w.remember.send("celsius", w.Celsius(-4.0))
        .continue_with(w.read_state)
        .with_initial(state={"order": order})
    )
    assert stack.client.submit_sync(stateful) == {"order": order, "celsius": w.Celsius(-4.0)}


def test_submit_one_task_by_name_from_a_shell(stack: FaultStack) -> None:
    submit = ["-m", "flink_tasks", "submit", "--timeout", "120s"]
    done = _run(stack, *submit, "--task", f"{M}.multiply", "--args", "[6, 7]")
    assert (done.returncode, done.stdout) == (0, "42\n"), done.stderr[-2000:]
    done = _run(stack, *submit, "--task", f"{M}.add", "--args", "[1]", "--kwargs", '{"y": 2}')
    assert (done.returncode, done.stdout) == (0, "3\n"), done.stderr[-2000:]
    done = _run(stack, *submit, "--task", f"{M}.nothing_here", "--args", "[]")
    assert done.returncode == 1 and done.stdout == ""
    assert "flink_tasks.TaskNotFoundError" in done.stderr and f"{M}.nothing_here" in done.stderr
    done = _run(stack, *submit, "--task", f"{M}.multiply", "--args", "[6, 7")
    assert done.returncode == 2 and done.stdout == ""
    assert "--args is not valid JSON" in done.stderr
