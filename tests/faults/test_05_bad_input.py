"""Scenario 5: bad input on every entry point. A clear error to the caller where one is known;
otherwise a logged, counted rejection (worker /metrics
`flink_tasks_rejected_messages_total{reason}`).
The job keeps running (same job id, no restart) and other pipelines are unaffected.
(A record without a key is in test_02_null_key.py, on a runtime of its own.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from flink_tasks import FlinkTasks, PipelineBuilder, TaskError
from flink_tasks._proto import messages_pb2
from flink_tasks.errors import (
    PipelineDefinitionError,
    PipelineNotFoundError,
    RequestTooLargeError,
)
from flink_tasks.types import PipelineStatus
from tests.faults import fault_tasks as ft
from tests.faults.harness import FaultStack, JobHealth, job_health, record_result

pytestmark = [pytest.mark.integration]


@pytest.fixture
def healthy(stack: FaultStack) -> Iterator[JobHealth]:
    """The job before the test; afterwards: same job, no restart, and it still serves."""
    before = job_health(stack.runtime)
    yield before
    assert stack.client.submit_sync(ft.square.send(9), timeout=60) == 81
    after = job_health(stack.runtime)
    assert (after.jid, after.state, after.restarts) == (before.jid, "RUNNING", before.restarts)


@pytest.fixture
def producer(stack: FaultStack) -> Iterator[Any]:
    p = KafkaProducer(bootstrap_servers=stack.settings.bootstrap_servers)
    yield p
    p.close()


def _wait_rejected(stack: FaultStack, reason: str, at_least: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while True:
        now = stack.worker.rejected(reason)
        if now >= at_least or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def test_unparsable_and_wrong_type_records(
    stack: FaultStack, healthy: JobHealth, producer: Any
) -> None:
    s = stack.settings
    action = messages_pb2.ActionRequest(
        pipeline_id="bad-1", action=messages_pb2.ACTION_GET_STATUS, reply_topic=s.replies_topic
    ).SerializeToString()
    request = messages_pb2.PipelineRequest(
        pipeline=ft.square.send(2).to_proto(), reply_topic="no-such-topic", reply_id="r"
    ).SerializeToString()
    task_result = messages_pb2.TaskResult(task_id="t", attempt=1).SerializeToString()
    unparsable_before = stack.worker.rejected("unparsable")
    egress_before = stack.worker.rejected("egress_topic")
    invalid_before = stack.worker.rejected("invalid_request")
    records = [
        (s.requests_topic, b"\xff\xfe not a protobuf \x00\x01"),  # garbage
        (s.actions_topic, b"\xff\xff\xff"),  # garbage
        (s.requests_topic, b'{"pipeline": [1, 2]}'),  # JSON
        (s.requests_topic, action),  # an action on the request topic
        (s.requests_topic, task_result),  # an internal message on the request topic
        (s.actions_topic, request),  # a request on the action topic
        (s.requests_topic, b""),  # empty
    ]
    for i, (topic, value) in enumerate(records):
        producer.send(topic, key=f"bad-{i}".encode(), value=value).get(timeout=30)
    unparsable = _wait_rejected(stack, "unparsable", unparsable_before + 5)
    egress = _wait_rejected(stack, "egress_topic", egress_before + 1)
    invalid = _wait_rejected(stack, "invalid_request", invalid_before + 1)
    record_result(
        scenario="malformed / wrong-type records on the request and action topics",
        records=len(records),
        rejected_unparsable=unparsable - unparsable_before,
        rejected_reply_to_unknown_topic=egress - egress_before,
        rejected_empty_request=invalid - invalid_before,
        job_restarts=0,
    )
    # garbage x2, JSON, an action and a task result on the request topic
    assert unparsable - unparsable_before == 5
    # a request read as an action names a reply topic that does not exist: dropped, counted
    assert egress - egress_before >= 1
    assert invalid - invalid_before >= 1


def test_reply_topic_that_does_not_exist(
    stack: FaultStack, healthy: JobHealth, producer: Any
) -> None:
    """A (well-formed) request or action naming a reply topic that does not exist: StateFun's
    egress would fail the whole job on it, so the worker refuses to write there."""
    before = stack.worker.rejected("egress_topic")
    request = messages_pb2.PipelineRequest(
        pipeline=ft.square.send(3).to_proto(),
        reply_topic="typo.replies",
        reply_id="r-typo",
        events_topic="typo.events",
    )
    producer.send(
        stack.settings.requests_topic, key=b"typo-1", value=request.SerializeToString()
    ).get(30)
    action = messages_pb2.ActionRequest(
        pipeline_id="typo-1", action=messages_pb2.ACTION_GET_STATUS, reply_topic="typo.replies"
    )
    producer.send(
        stack.settings.actions_topic, key=b"typo-1", value=action.SerializeToString()
    ).get(30)
    assert _wait_rejected(stack, "egress_topic", before + 3) >= before + 3
    # the pipeline itself ran
    assert stack.client.get_status_sync("typo-1") == PipelineStatus.COMPLETED


def test_client_always_sets_a_key(stack: FaultStack) -> None:
    """A record without a key crash-loops stock StateFun's Kafka ingress (test_02_null_key.py):
    the client refuses to send one, and every record it sends is keyed by the pipeline id."""
    s = stack.settings
    consumer = KafkaConsumer(bootstrap_servers=s.bootstrap_servers, group_id=None)
    partitions = [
        TopicPartition(topic, p)
        for topic in (s.requests_topic, s.actions_topic)
        for p in sorted(consumer.partitions_for_topic(topic) or [])
    ]
    consumer.assign(partitions)
    consumer.seek_to_end(*partitions)
    for tp in partitions:
        consumer.position(tp)
    client = stack.client
    pipeline = ft.square.send(4)
    assert client.submit_sync(pipeline, timeout=60) == 16
    enqueued = ft.square.send(5)
    client.enqueue(enqueued).result(timeout=30)
    assert client.get_status_sync(pipeline.id) == PipelineStatus.COMPLETED
    keys: list[tuple[str, bytes | None]] = []
    deadline = time.monotonic() + 120
    while len(keys) < 3 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            keys += [(r.topic, r.key) for r in records]
    consumer.close()
    assert sorted(keys) == sorted(
        [
            (s.requests_topic, pipeline.id.encode()),
            (s.requests_topic, enqueued.id.encode()),
            (s.actions_topic, pipeline.id.encode()),
        ]
    )
    no_id = ft.square.send(6)
    no_id.id = ""
    with pytest.raises(PipelineDefinitionError):
        client.submit(no_id)
    with pytest.raises(PipelineDefinitionError):
        client.enqueue(no_id)
    with pytest.raises(ValueError, match="non-empty"):
        client.get_status_sync("")


def test_unknown_task_type_and_namespace(stack: FaultStack, healthy: JobHealth) -> None:
    other = FlinkTasks()

    @other.bind(name="tests.faults.not_served_anywhere")
    def not_served() -> None: ...

    @other.bind(namespace="nobody_serves_this")
    def elsewhere() -> None: ...

    with pytest.raises(TaskError) as caught:
        stack.client.submit_sync(not_served.send(), timeout=60)
    assert caught.value.exception_type == "flink_tasks.TaskNotFoundError"
    assert "tests.faults.not_served_anywhere" in caught.value.exception_message
    with pytest.raises(TaskError) as caught_ns:
        stack.client.submit_sync(elsewhere.send(), timeout=60)
    assert caught_ns.value.exception_type == "flink_tasks.TaskNotFoundError"
    assert "nobody_serves_this" in caught_ns.value.exception_message
    # a task error like any other: exceptionally sees it
    result = stack.client.submit_sync(elsewhere.send().exceptionally(ft.describe_error), timeout=60)
    assert result[:2] == ["recovered", "flink_tasks.TaskNotFoundError"]


def test_actions_on_unknown_pipeline_ids(stack: FaultStack, healthy: JobHealth) -> None:
    client = stack.client
    assert client.get_status_sync("never-submitted") == PipelineStatus.PENDING
    for call in (
        client.get_result_sync,
        client.get_request_sync,
        client.pause_sync,
        client.unpause_sync,
        client.cancel_sync,
    ):
        with pytest.raises(PipelineNotFoundError, match="never-submitted"):
            call("never-submitted")


def test_oversized_and_unserialisable(stack: FaultStack, healthy: JobHealth, producer: Any) -> None:
    client = stack.client
    with pytest.raises(RequestTooLargeError, match="max_request_bytes"):
        client.submit(ft.safe_echo.send("x" * 2_000_000))
    # a raw oversized record never gets past the broker
    with pytest.raises(Exception, match=r"(?i)too large|MessageSizeTooLarge"):
        producer.send(stack.settings.requests_topic, key=b"big", value=b"x" * 2_000_000).get(30)
    with pytest.raises(TaskError) as too_big:
        client.submit_sync(ft.big_result.send(2_000_000), timeout=60)
    assert too_big.value.exception_type == "flink_tasks.SerializationError"
    assert "limit" in too_big.value.exception_message
    from flink_tasks import in_parallel

    with pytest.raises(TaskError) as group_too_big:  # each result fits; the reply would not
        client.submit_sync(in_parallel([ft.big_result.send(200_000) for _ in range(8)]), timeout=60)
    assert group_too_big.value.exception_type == "flink_tasks.SerializationError"
    with pytest.raises(TaskError) as unserialisable:
        client.submit_sync(ft.unserializable_result.send(), timeout=60)
    assert unserialisable.value.exception_type == "flink_tasks.SerializationError"
    assert "cannot be serialized" in unserialisable.value.exception_message


def test_duplicate_submission_of_a_running_pipeline(stack: FaultStack, healthy: JobHealth) -> None:
    client = stack.client
    first = ft.slow.send(4.0, "first")
    running = client.submit(first, timeout=60)
    deadline = time.monotonic() + 120
    while (
        client.get_status_sync(first.id) != PipelineStatus.RUNNING and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    second: PipelineBuilder = ft.square.send(7)
    second.id = first.id
    with pytest.raises(TaskError) as caught:  # reuse="allow": the engine's own refusal
        client.submit_sync(second, timeout=60, reuse="allow")
    assert "already running" in caught.value.exception_message
    assert running.result(timeout=60) == "first"
    # a finished id may run again
    assert client.submit_sync(second, timeout=60, reuse="allow") == 49


def test_deeply_recursive_orchestrator(stack: FaultStack, healthy: JobHealth) -> None:
    started = time.monotonic()
    assert stack.client.submit_sync(ft.recurse.send(0, 300), timeout=240) == 300
    record_result(
        scenario="orchestrator recursion 300 levels deep",
        pipelines=1,
        completed_correctly=1,
        total_s=round(time.monotonic() - started, 1),
    )
