"""`TaskEnvironment`: one task, its arguments, state and context, without a pipeline."""

from __future__ import annotations

import pytest

from flink_tasks import TaskError
from flink_tasks.records import RequestedTask
from flink_tasks.testing import TaskEnvironment, TaskOutcome
from tests import pipelines as t

env = TaskEnvironment(t.tasks, pipeline_id="p-1")


def test_a_result() -> None:
    assert env.run(t.multiply, 3, 2) == TaskOutcome(result=6)


def test_state_in_and_out() -> None:
    assert env.run(t.add_state, 5, state=10) == TaskOutcome(result=15, state=10)
    assert env.run(t.multiply_with_state, 2, 3, state=None) == TaskOutcome(result=6, state=10)


def test_context_ids_and_attempt() -> None:
    outcome = env.run(t.who_am_i, attempt=3)
    assert outcome.result["attempt"] == 3
    assert len(outcome.result["task_id"]) == 20


async def test_async_tasks_and_run_async() -> None:
    assert await env.run_async(t.async_add, 1, 2) == TaskOutcome(result=3)
    assert await env.run_async(t.add_state, 1, state=1) == TaskOutcome(result=2, state=1)


def test_async_task_from_sync_code() -> None:
    assert env.run(t.async_add, 2, 2) == TaskOutcome(result=4)


def test_an_error_is_the_task_error_a_pipeline_reports() -> None:
    with pytest.raises(TaskError) as raised:
        env.run(t.fail, "nope")
    assert raised.value.exception_type == "builtins.ValueError"
    assert raised.value.exception_message == "nope"
    assert "raise ValueError(message)" in raised.value.stacktrace


def test_a_result_the_wire_cannot_carry_fails_as_in_the_worker() -> None:
    with pytest.raises(TaskError) as raised:
        env.run(t.unserializable)
    assert raised.value.exception_type == "flink_tasks.SerializationError"


def test_an_orchestrator_returns_its_pipeline() -> None:
    outcome = env.run(t.count_to, 1, 3)
    assert outcome.result is None and outcome.pipeline is not None
    (entry,) = outcome.pipeline.entries
    assert isinstance(entry, RequestedTask)
    assert (entry.task_type, entry.args) == (t.count_to.type_name, (2, 3))
    assert env.run(t.count_to, 3, 3) == TaskOutcome(result=3)
