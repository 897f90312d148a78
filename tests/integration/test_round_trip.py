"""The first round trip on the real runtime, and what happens to bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kafka import KafkaProducer  # type: ignore[import-untyped]

from flink_tasks import TaskError
from flink_tasks.testing import PipelineEnvironment
from tests import pipelines as t

pytestmark = pytest.mark.integration


def _producer(env: PipelineEnvironment) -> Any:
    settings = env.client.settings  # type: ignore[attr-defined]
    return KafkaProducer(bootstrap_servers=settings.bootstrap_servers), settings


async def test_multiply_round_trip(local_env: PipelineEnvironment) -> None:
    assert await local_env.submit_async(t.multiply.send(3, 2)) == 6


async def test_task_exception_reaches_the_client(local_env: PipelineEnvironment) -> None:
    with pytest.raises(TaskError) as caught:
        await local_env.submit_async(t.fail.send("broken on purpose"))
    error = caught.value
    assert error.exception_type == "builtins.ValueError"
    assert error.exception_message == "broken on purpose"
    assert "Traceback (most recent call last)" in error.stacktrace
    assert "raise ValueError(message)" in error.stacktrace
    assert error.type == t.fail.type_name


@pytest.mark.parametrize("topic_kind", ["request", "action"])
async def test_malformed_records_are_rejected_and_counted(
    local_env: PipelineEnvironment, topic_kind: str
) -> None:
    assert local_env.worker is not None
    metrics = local_env.worker.metrics
    before = metrics.value("flink_tasks_rejected_messages_total", reason="unparsable")
    producer, settings = _producer(local_env)
    topic = settings.request_topic if topic_kind == "request" else settings.action_topic
    try:
        producer.send(topic, key=b"garbage-1", value=b"\xff\xfe not a protobuf \x00\x01\x02").get(
            timeout=30
        )
        producer.flush()
    finally:
        producer.close()
    for _ in range(300):
        if metrics.value("flink_tasks_rejected_messages_total", reason="unparsable") > before:
            break
        await asyncio.sleep(0.1)
    assert metrics.value("flink_tasks_rejected_messages_total", reason="unparsable") == before + 1
    # the job keeps serving
    assert await local_env.submit_async(t.multiply.send(4, 5)) == 20
