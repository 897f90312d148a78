"""The events of a pipeline on the real runtime, read with `FlinkTasksClient.events`."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from flink_tasks_client import (
    FlinkTasksClient,
    PipelineCancelledError,
    ResultTimeoutError,
    TaskError,
)

from flink_tasks import PipelineBuilder, PipelineStatus, in_parallel
from flink_tasks.records import GroupProgress, PipelineEvent
from flink_tasks.testing import PipelineEnvironment
from tests import pipelines as t

pytestmark = pytest.mark.integration


@pytest.fixture
def client(local_env: PipelineEnvironment) -> FlinkTasksClient:
    client = local_env.client
    assert isinstance(client, FlinkTasksClient)
    return client


async def _run_and_collect(
    client: FlinkTasksClient, pipeline: PipelineBuilder
) -> tuple[list[PipelineEvent], Any]:
    """Subscribe, submit, read the events until the root's terminal status; (events, outcome)."""
    events: list[PipelineEvent] = []
    async with client.events(pipeline.id, timeout=timedelta(seconds=60)) as stream:
        future = asyncio.wrap_future(client.submit(pipeline))
        async for event in stream:
            events.append(event)
    try:
        outcome: Any = await asyncio.wait_for(future, 30)
    except TaskError as err:
        outcome = err
    return events, outcome


def _root_statuses(events: list[PipelineEvent], root: str) -> list[PipelineStatus | None]:
    return [e.status for e in events if e.pipeline_id == root and e.status is not None]


async def test_created_first_with_the_structure_then_running_then_completed(
    client: FlinkTasksClient,
) -> None:
    pipeline = t.multiply.send(3, 2).continue_with(t.divide, 2).continue_with(t.add, 1)
    events, result = await _run_and_collect(client, pipeline)
    assert result == 4
    assert all(e.root_pipeline_id == pipeline.id for e in events)
    first = events[0]
    assert first.pipeline_id == pipeline.id
    assert first.kind == "pipeline_created" and first.created is not None
    assert [e.task_type for e in first.created.entries] == [  # type: ignore[union-attr]
        e.task_type  # type: ignore[union-attr]
        for e in pipeline.entries
    ]
    assert all(e.args is None for e in first.created.entries)  # type: ignore[union-attr]
    assert _root_statuses(events, pipeline.id) == [
        PipelineStatus.RUNNING,
        PipelineStatus.COMPLETED,
    ]
    assert events[-1].kind == "status_changed"
    assert all(e.timestamp_ms > 0 for e in events)
    assert [e.timestamp_ms for e in events] == sorted(e.timestamp_ms for e in events)


async def test_failed_pipeline_ends_with_failed_and_reports_skipped_tasks(
    client: FlinkTasksClient,
) -> None:
    pipeline = t.fail.send("boom").continue_with(t.echo, 1).continue_with(t.echo, 2)
    events, outcome = await _run_and_collect(client, pipeline)
    assert isinstance(outcome, TaskError)
    assert _root_statuses(events, pipeline.id) == [
        PipelineStatus.RUNNING,
        PipelineStatus.FAILED,
    ]
    skipped = [e.skipped_task_ids for e in events if e.kind == "tasks_skipped"]
    assert skipped, "a PipelineTasksSkipped event"
    skipped_ids = [task_id for s in skipped for task_id in s]
    assert skipped_ids == [pipeline.entries[1].task_id, pipeline.entries[2].task_id]  # type: ignore[union-attr]
    assert events[-1].status == PipelineStatus.FAILED


async def test_skipped_up_to_exceptionally(client: FlinkTasksClient) -> None:
    pipeline = (
        t.fail.send("x")
        .continue_with(t.echo, 1)
        .exceptionally(t.handle_error)
        .continue_with(t.echo)
    )
    events, result = await _run_and_collect(client, pipeline)
    assert result == ("handled", "builtins.ValueError", "x")
    skipped = [i for e in events for i in e.skipped_task_ids]
    assert skipped == [pipeline.entries[1].task_id]  # type: ignore[union-attr]
    assert _root_statuses(events, pipeline.id)[-1] == PipelineStatus.COMPLETED


async def test_group_progress_for_a_fan_out(client: FlinkTasksClient) -> None:
    count = 200
    pipeline = in_parallel([t.multiply.send(i, 2) for i in range(count)], max_parallelism=50)
    events, result = await _run_and_collect(client, pipeline)
    assert result == [2 * i for i in range(count)]
    progress = [e.progress for e in events if e.progress is not None]
    assert progress, "GroupProgress events"
    # A large group may be split into stages (each a child pipeline with its own group): each
    # group's progress only grows and ends complete, and together the groups cover every chain.
    by_group: dict[str, list[GroupProgress]] = {}
    for p in progress:
        by_group.setdefault(p.group_id, []).append(p)
    for group_id, updates in by_group.items():
        completed = [p.completed for p in updates]
        assert completed == sorted(completed), group_id
        assert completed[-1] == updates[-1].total, group_id
        assert len({p.total for p in updates}) == 1, group_id
    totals = {group_id: updates[-1].total for group_id, updates in by_group.items()}
    leaves = [g for g in totals if not any(o != g and o.startswith(g + ".") for o in totals)]
    assert sum(totals[g] for g in leaves) == count
    assert _root_statuses(events, pipeline.id) == [
        PipelineStatus.RUNNING,
        PipelineStatus.COMPLETED,
    ]
    last_progress = max(i for i, e in enumerate(events) if e.kind == "group_progress")
    assert last_progress < len(events) - 1  # COMPLETED comes after the last progress


async def test_child_pipelines_events_carry_the_root_id(client: FlinkTasksClient) -> None:
    pipeline = t.multiply_and_subtract.send(3, 2, 1).continue_with(t.multiply, 10)
    events, result = await _run_and_collect(client, pipeline)
    assert result == 50
    children = {e.pipeline_id for e in events if e.pipeline_id != pipeline.id}
    assert children, "the orchestrator's child pipeline emits events too"
    created = [e for e in events if e.created is not None]
    assert created[0].pipeline_id == pipeline.id
    assert any(c.created and c.created.parent_id for c in created[1:])
    assert events[-1].pipeline_id == pipeline.id
    assert events[-1].status == PipelineStatus.COMPLETED


async def test_cancelled_pipeline_events(client: FlinkTasksClient) -> None:
    pipeline = t.sleep_async.send(5, "a").continue_with(t.echo).finally_do(t.give_none)
    events: list[PipelineEvent] = []
    async with client.events(pipeline.id, timeout=timedelta(seconds=60)) as stream:
        future = asyncio.wrap_future(client.submit(pipeline))
        async for event in stream:
            events.append(event)
            if event.status == PipelineStatus.RUNNING:
                await client.cancel(pipeline.id)
    with pytest.raises(PipelineCancelledError):
        await asyncio.wait_for(future, 30)
    # the running task holds the pipeline in CANCELLING until its finally_do has run
    assert _root_statuses(events, pipeline.id) == [
        PipelineStatus.RUNNING,
        PipelineStatus.CANCELLING,
        PipelineStatus.CANCELLED,
    ]


async def test_from_beginning_finds_a_finished_pipeline(client: FlinkTasksClient) -> None:
    pipeline = t.multiply.send(2, 21)
    assert await client.submit_async(pipeline) == 42
    kinds = [
        e.kind
        async for e in client.events(
            pipeline.id, from_beginning=True, timeout=timedelta(seconds=60)
        )
    ]
    assert kinds[0] == "pipeline_created"
    assert kinds[-1] == "status_changed"


async def test_a_stream_without_events_times_out(client: FlinkTasksClient) -> None:
    with pytest.raises(ResultTimeoutError):
        async for _ in client.events("nothing-happens-here", timeout=timedelta(seconds=1)):
            pass
