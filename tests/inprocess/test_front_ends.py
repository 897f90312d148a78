"""One behaviour, three front-ends: the in-process client, `PipelineEnvironment` and the Kafka
client on the real runtime give the same result and raise the same exception for the same
outcome, because they share one request validator (`flink_tasks.requests`) and one reply decoder
(`flink_tasks.replies`). The Kafka case reuses the session's real runtime (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from flink_tasks import PipelineBuilder, PipelineStatus, in_parallel
from flink_tasks.errors import (
    PipelineDefinitionError,
    PipelineNotFoundError,
    RequestTooLargeError,
    TaskError,
)
from flink_tasks.records import RequestedTask, SubmittedPipeline
from flink_tasks.requests import DEFAULT_MAX_REQUEST_BYTES
from flink_tasks.testing import InProcessClient, PipelineEnvironment
from tests import pipelines as t
from tests.conftest import ALL_TASKS

FRONT_ENDS = [
    "in-process client",
    "PipelineEnvironment",
    pytest.param("Kafka client", marks=pytest.mark.integration),
]


@pytest.fixture(params=FRONT_ENDS)
def front_end_kind(request: pytest.FixtureRequest) -> Any:
    """The front-end's name, or the session's Kafka client (resolved here, outside the loop)."""
    if request.param == "Kafka client":
        local_env: PipelineEnvironment = request.getfixturevalue("local_env")
        return local_env.client
    return request.param


@pytest.fixture
async def front_end(front_end_kind: Any) -> AsyncIterator[Any]:
    if not isinstance(front_end_kind, str):
        yield front_end_kind
        return
    async with PipelineEnvironment.in_process(ALL_TASKS, default_timeout=30) as env:
        if front_end_kind == "in-process client":
            assert isinstance(env.client, InProcessClient)
            yield env.client
        else:
            yield env


async def test_a_result(front_end: Any) -> None:
    pipeline = t.multiply.send(3, 2)
    assert await front_end.submit_async(pipeline) == 6
    assert await front_end.get_status(pipeline.id) == PipelineStatus.COMPLETED
    assert await front_end.get_result(pipeline.id) == 6
    entry = pipeline.entries[0]
    assert await front_end.get_request(pipeline.id) == SubmittedPipeline(
        pipeline_id=pipeline.id,
        entries=(RequestedTask(entry.task_id, entry.task_type, args=(3, 2)),),  # type: ignore[union-attr]
        reply_topic=(await front_end.get_request(pipeline.id)).reply_topic,
        events_topic=(await front_end.get_request(pipeline.id)).events_topic,
    )


async def test_a_none_result(front_end: Any) -> None:
    pipeline = t.give_none.send()
    assert await front_end.submit_async(pipeline) is None
    assert await front_end.get_result(pipeline.id) is None


async def test_a_task_error(front_end: Any) -> None:
    pipeline = t.fail.send("same everywhere")
    with pytest.raises(TaskError) as raised:
        await front_end.submit_async(pipeline)
    assert type(raised.value) is TaskError
    assert raised.value.exception_type == "builtins.ValueError"
    assert raised.value.exception_message == "same everywhere"
    assert raised.value.task_id == pipeline.entries[0].task_id  # type: ignore[union-attr]
    assert await front_end.get_status(pipeline.id) == PipelineStatus.FAILED
    with pytest.raises(TaskError) as stored:
        await front_end.get_result(pipeline.id)
    assert type(stored.value) is TaskError
    assert stored.value.exception_message == "same everywhere"


async def test_an_oversized_request_is_refused_before_sending(front_end: Any) -> None:
    pipeline = t.echo.send("x" * DEFAULT_MAX_REQUEST_BYTES)
    with pytest.raises(
        RequestTooLargeError, match=f"over max_request_bytes={DEFAULT_MAX_REQUEST_BYTES}"
    ):
        await front_end.submit_async(pipeline)
    assert await front_end.get_status(pipeline.id) == PipelineStatus.PENDING


async def test_bad_input_and_unknown_ids(front_end: Any) -> None:
    with pytest.raises(PipelineDefinitionError, match="the pipeline is empty"):
        await front_end.submit_async(PipelineBuilder(()))
    with pytest.raises(PipelineDefinitionError, match="reserves"):
        bad_id = t.echo.send(1)
        bad_id.id = "a:b"
        await front_end.submit_async(bad_id)
    with pytest.raises(TypeError, match="submit takes a pipeline"):
        await front_end.submit_async(t.echo)
    with pytest.raises(ValueError, match="timeout must be positive"):
        await front_end.submit_async(t.echo.send(1), timeout=0)
    with pytest.raises(ValueError, match="pipeline_id must be a non-empty string"):
        await front_end.get_status("")
    with pytest.raises(PipelineNotFoundError):
        await front_end.get_result("never-submitted-front-end")
    with pytest.raises(PipelineNotFoundError):
        await front_end.get_request("never-submitted-front-end")
    assert await front_end.get_status("never-submitted-front-end") == PipelineStatus.PENDING
    assert await front_end.submit_async(in_parallel([in_parallel([])])) == []
