"""Task actions through `FlinkTasksClient` on the real runtime (Kafka + StateFun)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from flink_tasks_client import (
    ActionError,
    FlinkTasksClient,
    PipelineCancelledError,
    PipelineNotFoundError,
    PipelineStatus,
    TaskError,
)

from flink_tasks import PipelineBuilder
from flink_tasks._proto import messages_pb2
from flink_tasks.engine import effects as fx
from flink_tasks.engine import step as engine_step
from flink_tasks.errors import ALREADY_RUNNING_ERROR, CANCELLED_ERROR
from flink_tasks.records import SubmittedPipeline
from flink_tasks.testing import PipelineEnvironment
from flink_tasks.worker import functions as worker_functions
from tests import pipelines as t

pytestmark = pytest.mark.integration


class StartedTasks:
    """A worker hook recording the tasks started, per root pipeline id."""

    def __init__(self) -> None:
        self.started: dict[str, list[str]] = {}
        self.finished: Counter[str] = Counter()

    def task_started(self, request: messages_pb2.TaskRequest) -> None:
        self.started.setdefault(request.root_pipeline_id, []).append(request.task_type)

    def task_received(self, request: messages_pb2.TaskRequest) -> None:
        pass

    def task_finished(
        self, request: messages_pb2.TaskRequest, result: messages_pb2.TaskResult
    ) -> None:
        self.finished[request.root_pipeline_id] += 1

    def task_retried(self, request: messages_pb2.TaskRequest) -> None:
        pass

    def of(self, pipeline_id: str) -> list[str]:
        return list(self.started.get(pipeline_id, []))

    def finished_of(self, pipeline_id: str) -> int:
        return self.finished[pipeline_id]


@pytest.fixture
def started_tasks(local_env: PipelineEnvironment) -> Iterator[StartedTasks]:
    assert local_env.worker is not None
    hooks = local_env.worker.runner.hooks
    recorder = StartedTasks()
    hooks.append(recorder)
    try:
        yield recorder
    finally:
        hooks.remove(recorder)


class PipelineSteps:
    """A spy on the worker's pipeline function: each task result an address's engine step applied,
    with the effects that step returned (the real `step` runs; nothing is replaced)."""

    def __init__(self) -> None:
        self.results: list[tuple[str, str, list[fx.Effect]]] = []

    def spy(self, real: Any) -> Any:
        def step(address_id: str, state: Any, message: Any, *args: Any, **kwargs: Any) -> Any:
            effects = real(address_id, state, message, *args, **kwargs)
            result = _task_result_in(message)
            if result is not None:
                self.results.append((address_id, result.task_id, list(effects)))
            return effects

        return step

    def effects_of_result(self, address_id: str, task_id: str) -> list[fx.Effect] | None:
        """The effects of the step that applied `task_id`'s result at `address_id`, if any."""
        for address, task, effects in self.results:
            if (address, task) == (address_id, task_id):
                return effects
        return None


def _task_result_in(message: object) -> messages_pb2.TaskResult | None:
    # a result comes inline, or from the task-reports topic when the task outlived inline_wait
    if isinstance(message, messages_pb2.TaskResult):
        return message
    if isinstance(message, messages_pb2.WorkerReport) and message.HasField("result"):
        return message.result
    return None


@pytest.fixture
def pipeline_steps(monkeypatch: pytest.MonkeyPatch) -> PipelineSteps:
    steps = PipelineSteps()
    monkeypatch.setattr(worker_functions, "step", steps.spy(engine_step))
    return steps


@pytest.fixture
def client(local_env: PipelineEnvironment) -> FlinkTasksClient:
    client = local_env.client
    assert isinstance(client, FlinkTasksClient)
    return client


async def _until(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _status_becomes(
    client: FlinkTasksClient, pipeline_id: str, status: PipelineStatus, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while (current := await client.get_status(pipeline_id)) != status:
        if time.monotonic() > deadline:
            raise AssertionError(f"{pipeline_id} is {current.name}, never {status.name}")
        await asyncio.sleep(0.1)


def _gated_two_steps() -> tuple[PipelineBuilder, threading.Event]:
    """Two steps; the first finishes once the test opens the returned gate."""
    name = uuid.uuid4().hex
    return t.at_gate.send(name, "a").continue_with(t.make_list, "b"), t.gate(name)


async def test_status_request_and_result_through_the_life_cycle(
    client: FlinkTasksClient, started_tasks: StartedTasks
) -> None:
    pipeline, gate = _gated_two_steps()
    assert await client.get_status(pipeline.id) == PipelineStatus.PENDING
    future = asyncio.wrap_future(client.submit(pipeline))
    await _until(lambda: started_tasks.of(pipeline.id), "the first task to start")
    assert await client.get_status(pipeline.id) == PipelineStatus.RUNNING
    request = await client.get_request(pipeline.id)
    assert isinstance(request, SubmittedPipeline)
    assert request.pipeline_id == pipeline.id
    assert [(e.task_type, e.args) for e in request.entries] == [  # type: ignore[union-attr]
        (e.task_type, e.args)  # type: ignore[union-attr]
        for e in pipeline.entries
    ]
    with pytest.raises(PipelineNotFoundError):
        await client.get_result(pipeline.id)  # not finished yet
    gate.set()
    assert await future == ["a", "b"]
    assert await client.get_status(pipeline.id) == PipelineStatus.COMPLETED
    assert await client.get_result(pipeline.id) == ["a", "b"]
    assert (await client.get_request(pipeline.id)).pipeline_id == pipeline.id
    # the sync variants are the same calls
    assert await asyncio.to_thread(client.get_status_sync, pipeline.id) == PipelineStatus.COMPLETED
    assert await asyncio.to_thread(client.get_result_sync, pipeline.id) == ["a", "b"]


async def test_a_failed_pipeline_keeps_its_error(client: FlinkTasksClient) -> None:
    pipeline = t.fail.send("kept")
    with pytest.raises(TaskError):
        await client.submit_async(pipeline)
    assert await client.get_status(pipeline.id) == PipelineStatus.FAILED
    with pytest.raises(TaskError) as caught:
        await client.get_result(pipeline.id)
    assert caught.value.exception_type == "builtins.ValueError"
    assert caught.value.exception_message == "kept"


async def test_pause_holds_the_next_task_and_unpause_sends_it(
    client: FlinkTasksClient, started_tasks: StartedTasks, pipeline_steps: PipelineSteps
) -> None:
    pipeline, gate = _gated_two_steps()
    first_task_id = pipeline.entries[0].task_id  # type: ignore[union-attr]
    future = asyncio.wrap_future(client.submit(pipeline))
    await _until(lambda: started_tasks.of(pipeline.id), "the first task to start")
    assert await client.pause(pipeline.id) == PipelineStatus.PAUSED
    assert await client.get_status(pipeline.id) == PipelineStatus.PAUSED
    # the running task finishes and its result is kept, but the next task is held: the engine
    # applied the result that would have started it, and that step sent no task
    gate.set()
    await _until(
        lambda: pipeline_steps.effects_of_result(pipeline.id, first_task_id) is not None,
        "the pipeline to apply the first task's result",
    )
    held = pipeline_steps.effects_of_result(pipeline.id, first_task_id)
    assert held is not None
    assert [e for e in held if isinstance(e, fx.SendTask)] == []
    assert started_tasks.finished_of(pipeline.id) == 1
    assert started_tasks.of(pipeline.id) == [t.at_gate.type_name]
    assert await client.get_status(pipeline.id) == PipelineStatus.PAUSED
    assert not future.done()
    with pytest.raises(PipelineNotFoundError):
        await client.get_result(pipeline.id)
    assert await client.unpause(pipeline.id) == PipelineStatus.RUNNING
    assert await asyncio.wait_for(future, 30) == ["a", "b"]
    assert started_tasks.of(pipeline.id) == [t.at_gate.type_name, t.make_list.type_name]
    assert await client.get_status(pipeline.id) == PipelineStatus.COMPLETED


async def test_cancel_runs_finally_do_and_replies_cancelled(
    client: FlinkTasksClient, started_tasks: StartedTasks
) -> None:
    name = uuid.uuid4().hex
    pipeline = (
        t.at_gate.send(name, "a").continue_with(t.echo, "never").finally_do(t.give_none, "cleanup")
    )
    future = asyncio.wrap_future(client.submit(pipeline))
    await _until(lambda: started_tasks.of(pipeline.id), "the first task to start")
    # the running task holds the pipeline in CANCELLING until finally_do has run
    assert await client.cancel(pipeline.id) == PipelineStatus.CANCELLING
    with pytest.raises(PipelineCancelledError) as caught:
        await asyncio.wait_for(future, 30)
    assert caught.value.exception_type == CANCELLED_ERROR
    await _status_becomes(client, pipeline.id, PipelineStatus.CANCELLED)
    t.gate(name).set()  # the cancelled task ends; its result is ignored
    await _until(lambda: started_tasks.finished_of(pipeline.id) == 2, "both tasks to end")
    # finally_do ran once; the entry after the cancelled task never started
    assert started_tasks.of(pipeline.id) == [t.at_gate.type_name, t.give_none.type_name]
    with pytest.raises(PipelineCancelledError):
        await client.get_result(pipeline.id)
    with pytest.raises(ActionError):
        await client.cancel(pipeline.id)  # finished: refused
    assert await client.get_status(pipeline.id) == PipelineStatus.CANCELLED


async def test_cancel_of_a_paused_pipeline(
    client: FlinkTasksClient, started_tasks: StartedTasks
) -> None:
    gated, gate = _gated_two_steps()
    pipeline = gated.finally_do(t.give_none)
    future = asyncio.wrap_future(client.submit(pipeline))
    await _until(lambda: started_tasks.of(pipeline.id), "the first task to start")
    assert await client.pause(pipeline.id) == PipelineStatus.PAUSED
    await client.cancel(pipeline.id)
    with pytest.raises(PipelineCancelledError):
        await asyncio.wait_for(future, 30)
    await _status_becomes(client, pipeline.id, PipelineStatus.CANCELLED)
    gate.set()
    assert t.make_list.type_name not in started_tasks.of(pipeline.id)
    assert t.give_none.type_name in started_tasks.of(pipeline.id)


async def test_actions_on_an_unknown_id(client: FlinkTasksClient) -> None:
    unknown = "never-submitted-" + PipelineBuilder().id
    assert await client.get_status(unknown) == PipelineStatus.PENDING
    with pytest.raises(PipelineNotFoundError):
        await client.get_result(unknown)
    with pytest.raises(PipelineNotFoundError):
        await client.get_request(unknown)
    for action in (client.pause, client.unpause, client.cancel):
        with pytest.raises((ActionError, PipelineNotFoundError)):
            await action(unknown)
    assert await client.get_status(unknown) == PipelineStatus.PENDING


@pytest.mark.parametrize("outcome", ["completed", "failed"])
async def test_actions_on_a_finished_pipeline_are_refused_and_change_nothing(
    client: FlinkTasksClient, outcome: str
) -> None:
    if outcome == "completed":
        pipeline = t.multiply.send(6, 7)
        assert await client.submit_async(pipeline) == 42
        final = PipelineStatus.COMPLETED
    else:
        pipeline = t.fail.send("done")
        with pytest.raises(TaskError):
            await client.submit_async(pipeline)
        final = PipelineStatus.FAILED
    for action in (client.pause, client.unpause, client.cancel):
        with pytest.raises(ActionError):
            await action(pipeline.id)
        assert await client.get_status(pipeline.id) == final
    if outcome == "completed":
        assert await client.get_result(pipeline.id) == 42


async def test_duplicate_submission_of_a_running_id_is_rejected(
    client: FlinkTasksClient, started_tasks: StartedTasks
) -> None:
    pipeline, gate = _gated_two_steps()
    first = asyncio.wrap_future(client.submit(pipeline))
    await _until(lambda: started_tasks.of(pipeline.id), "the first task to start")
    duplicate = t.multiply.send(1, 2)
    duplicate.id = pipeline.id
    with pytest.raises(TaskError) as caught:  # reuse="allow": the engine's own refusal
        await client.submit_async(duplicate, reuse="allow")
    assert caught.value.exception_type == ALREADY_RUNNING_ERROR
    assert pipeline.id in caught.value.exception_message
    # the running pipeline is not disturbed
    gate.set()
    assert await asyncio.wait_for(first, 30) == ["a", "b"]
    assert t.multiply.type_name not in started_tasks.of(pipeline.id)
    # a finished id may be run again
    assert await client.submit_async(duplicate, reuse="allow") == 2
    assert await client.get_result(pipeline.id) == 2
