"""Worker hooks, state expiry and reply limits, in-process."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest

from flink_tasks import PipelineStatus, TaskError, wire
from flink_tasks._proto import messages_pb2
from flink_tasks.engine import EngineSettings
from flink_tasks.records import RequestedGroup
from flink_tasks.testing import PipelineEnvironment
from tests import pipelines as t


class RecordingHooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def task_received(self, request: messages_pb2.TaskRequest) -> None:
        self.calls.append(("received", request.task_type))

    def task_started(self, request: messages_pb2.TaskRequest) -> None:
        self.calls.append(("started", request.task_type))

    def task_finished(
        self, request: messages_pb2.TaskRequest, result: messages_pb2.TaskResult
    ) -> None:
        self.calls.append(("finished", result.WhichOneof("outcome") or ""))

    def task_retried(self, request: messages_pb2.TaskRequest) -> None:
        self.calls.append(("retried", str(request.attempt)))


class BrokenHooks:
    def task_started(self, request: Any) -> None:
        raise RuntimeError("hook bug")


async def test_worker_hooks_and_failing_hooks_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    hooks = RecordingHooks()
    async with PipelineEnvironment.in_process(t.tasks, hooks=[hooks, BrokenHooks()]) as env:
        assert await env.submit_async(t.flaky.send("hooks", 1)) == "succeeded on attempt 2"
    assert hooks.calls == [
        ("received", t.flaky.type_name),
        ("started", t.flaky.type_name),
        ("finished", "error"),
        ("received", t.flaky.type_name),
        ("retried", "2"),
        ("started", t.flaky.type_name),
        ("finished", "result"),
    ]
    assert any("hook" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


async def test_finished_pipelines_expire_after_retention_but_not_while_running() -> None:
    engine = EngineSettings(retention=timedelta(milliseconds=300))
    async with PipelineEnvironment.in_process(t.tasks, engine=engine, virtual_time=True) as env:
        name = uuid.uuid4().hex
        slow = t.at_gate.send(name, "slow")
        running = asyncio.ensure_future(env.submit_async(slow))
        while await env.get_status(slow.id) != PipelineStatus.RUNNING:
            await asyncio.sleep(0.01)
        await env.sleep(timedelta(seconds=1))  # past retention, still running
        assert await env.get_status(slow.id) == PipelineStatus.RUNNING
        t.gate(name).set()
        assert await running == "slow"
        assert await env.get_result(slow.id) == "slow"
        await env.sleep(timedelta(milliseconds=299))
        assert await env.get_result(slow.id) == "slow"
        await env.sleep(timedelta(milliseconds=1))
        assert await env.get_status(slow.id) == PipelineStatus.PENDING
        assert env.runtime is not None
        assert env.runtime.state_of(wire.PIPELINE_FUNCTION, slow.id) == {}
        assert env.runtime.state_of(wire.PIPELINE_FUNCTION, slow.id + "~request") == {}


async def test_a_short_pipeline_is_expired_by_its_stall_check_once_retention_is_over() -> None:
    """Stall timeout and retention alike (both 24 h by default): the stall check armed at the
    start comes 1 % later than the timeout, after the retention of a pipeline that finished by
    then, and expires it instead of a delayed message of its own."""
    engine = EngineSettings(retention=timedelta(seconds=10), stall_timeout=timedelta(seconds=10))
    async with PipelineEnvironment.in_process(t.tasks, engine=engine, virtual_time=True) as env:
        assert env.clock is not None and env.runtime is not None
        short = t.echo.send("short")
        assert await env.submit_async(short) == "short"
        await env.runtime.settled()
        assert env.clock.pending == 1  # the stall check; no expiry of its own
        await env.sleep(timedelta(seconds=10))
        assert await env.get_result(short.id) == "short"  # the whole retention
        await env.sleep(timedelta(milliseconds=100))  # and the check's slack
        assert await env.get_status(short.id) == PipelineStatus.PENDING
        assert env.runtime.state_of(wire.PIPELINE_FUNCTION, short.id) == {}
        assert env.clock.pending == 0


async def test_a_reply_over_the_limit_is_a_clear_error() -> None:
    engine = EngineSettings(max_reply_bytes=1000)
    async with PipelineEnvironment.in_process(t.tasks, engine=engine) as env:
        with pytest.raises(TaskError) as caught:
            await env.submit_async(t.echo.send("x" * 5000))
        assert caught.value.exception_type == "flink_tasks.SerializationError"
        assert "reply limit" in caught.value.exception_message


async def test_pipeline_created_event_is_bounded_for_large_pipelines() -> None:
    from flink_tasks import in_parallel

    async with PipelineEnvironment.in_process(t.tasks) as env:
        pipeline = in_parallel([t.multiply.send(i) for i in range(5000)]).with_initial(args=1)
        await env.submit_async(pipeline)
        created = [
            e.created
            for e in env.events(pipeline.id)
            if e.created is not None and e.pipeline_id == pipeline.id
        ]
        assert len(created) == 1
        assert created[0].task_count == 5000 and created[0].truncated
        (group,) = created[0].entries
        assert isinstance(group, RequestedGroup) and 0 < len(group.chains) < 5000


async def test_oversized_results_fail_clearly_but_large_orchestrated_pipelines_run() -> None:
    # the orchestrator's ~1.3 MB pipeline must come back in the call: past the inline wait it
    # would go over the task-reports topic (1 MiB records; tests/inprocess/test_long_tasks.py),
    # and building 20,000 tasks takes ~4 s, longer on a busy machine
    async with PipelineEnvironment.in_process(t.tasks, inline_wait=timedelta(minutes=2)) as env:
        with pytest.raises(TaskError) as caught:
            await env.submit_async(t.echo.send("x" * 300_000))
        assert caught.value.exception_type == "flink_tasks.SerializationError"
        assert "pass large data by reference" in caught.value.exception_message
        result = await env.submit_async(t.fan_out_inside.send(20_000), timeout=timedelta(minutes=2))
        assert result == 2 * sum(range(20_000))
