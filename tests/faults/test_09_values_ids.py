"""Scenario 9: values that cannot be sent fail at the sender, pipelines end at their deadline,
and a child pipeline's id cannot be hijacked. On the real runtime, worker in its own process:
each case asserts the outcome the user sees, exactly one reply per pipeline on the raw reply
topic, and the Flink job's id and `numRestarts` unchanged."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from flink_tasks import PipelineStatus, SerializationError, TaskError, in_parallel
from flink_tasks._proto import messages_pb2
from flink_tasks.errors import INVALID_REQUEST_ERROR, PIPELINE_DEADLINE_ERROR, SERIALIZATION_ERROR
from tests.faults import fault_tasks as ft
from tests.faults.harness import FaultStack, ReplyReader, job_health, record_result

pytestmark = [pytest.mark.integration]


@dataclass
class Case:
    reader: ReplyReader
    time_to_error_s: float = float("nan")


@contextlib.contextmanager
def job_unharmed(stack: FaultStack, scenario: str, outcome: str) -> Iterator[Case]:
    """Runs a case with a raw reply reader; then records its row and checks that the Flink job
    is the same one, RUNNING, with no more restarts than before."""
    before = job_health(stack.runtime)
    case = Case(stack.reply_reader())
    try:
        yield case
    finally:
        case.reader.close()
    after = job_health(stack.runtime)
    record_result(
        scenario=scenario,
        outcome=outcome,
        time_to_error_s=round(case.time_to_error_s, 3),
        job_restarts=after.restarts - before.restarts,
    )
    assert (after.jid, after.state, after.restarts) == (before.jid, "RUNNING", before.restarts)


async def test_too_deep_argument_fails_in_the_client(stack: FaultStack) -> None:
    with job_unharmed(
        stack, "40-deep argument", "SerializationError in the client, nothing sent"
    ) as case:
        pipeline = ft.safe_echo.send(ft.nested(40))
        started = time.monotonic()
        with pytest.raises(SerializationError, match="more than 20 levels"):
            stack.client.submit(pipeline)
        case.time_to_error_s = time.monotonic() - started
        assert case.time_to_error_s < 1
        # nothing was sent: the id is unknown to the pipeline function (the one reply is the
        # get_status answer)
        assert await stack.client.get_status(pipeline.id) == PipelineStatus.PENDING
        assert case.reader.wait_for([pipeline.id], 10).by_pipeline[pipeline.id] == 1
        ok = ft.safe_echo.send(ft.nested(20))
        assert stack.client.submit(ok).result(timeout=60) == repr(ft.nested(20))
        assert case.reader.wait_for([ok.id], 10).by_pipeline[ok.id] == 1


def test_too_deep_result_is_a_task_error(stack: FaultStack) -> None:
    with job_unharmed(stack, "40-deep result", f"TaskError {SERIALIZATION_ERROR}") as case:
        pipeline = ft.deep_result.send(40)
        started = time.monotonic()
        with pytest.raises(TaskError) as caught:
            stack.client.submit(pipeline).result(timeout=60)
        case.time_to_error_s = time.monotonic() - started
        assert caught.value.exception_type == SERIALIZATION_ERROR
        assert "more than 20 levels" in caught.value.exception_message
        assert case.time_to_error_s < 10
        handled = ft.deep_result.send(40).exceptionally(ft.describe_error, "handled")
        recovered = stack.client.submit(handled).result(timeout=60)
        assert recovered[:2] == ["recovered", SERIALIZATION_ERROR]
        log = case.reader.wait_for([pipeline.id, handled.id], 10)
        assert (log.by_pipeline[pipeline.id], log.by_pipeline[handled.id]) == (1, 1)


async def test_child_id_hijack_is_refused(stack: FaultStack, tmp_path: Path) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=stack.settings.bootstrap_servers)
    try:
        with job_unharmed(
            stack,
            "child-id hijack",
            f"{INVALID_REQUEST_ERROR} to the requester; parent completed correctly",
        ) as case:
            # the child runs until the refusal was checked (however late the request is read)
            release = tmp_path / "release"
            parent = ft.spawn_until_file.send(str(release), "parent's").continue_with(ft.safe_echo)
            future = stack.client.submit(parent, timeout=120)
            child_id = ""
            async for event in stack.client.events(parent.id, from_beginning=True, timeout=60):
                if event.created is not None and event.created.parent_id:
                    child_id = event.pipeline_id
                    break
            assert child_id.startswith(parent.id + ":")
            # a producer other than our client (which refuses ':' in ids) submits at the
            # child's id
            reply_id = uuid.uuid4().hex
            request = messages_pb2.PipelineRequest(
                pipeline=ft.safe_echo.send("hijack").to_proto(),
                reply_topic=stack.settings.replies_topic,
                reply_id=reply_id,
            )
            sent = time.monotonic()
            producer.send(
                stack.settings.requests_topic,
                key=child_id.encode(),
                value=request.SerializeToString(),
            ).get(timeout=30)
            log = case.reader.wait_for([child_id], 30)
            case.time_to_error_s = time.monotonic() - sent
            refusal = log.replies[reply_id]
            assert refusal.error.exception_type == INVALID_REQUEST_ERROR
            assert "belongs to a child pipeline" in refusal.error.exception_message
            release.touch()
            assert future.result(timeout=60) == repr("parent's")
            log = case.reader.wait_for([parent.id], 10)
            assert (log.by_pipeline[parent.id], log.by_pipeline[child_id]) == (1, 1)
            assert log.by_reply_id[reply_id] == 1
    finally:
        producer.close()


async def test_pipeline_deadline(stack: FaultStack) -> None:
    with job_unharmed(
        stack,
        "pipeline deadline=3 s over three 60 s chains",
        f"TaskError {PIPELINE_DEADLINE_ERROR}, status FAILED",
    ) as case:
        chains = [ft.slow.send(60, i).continue_with(ft.safe_echo) for i in range(3)]
        pipeline = in_parallel(chains).with_options(deadline=timedelta(seconds=3))
        started = time.monotonic()
        with pytest.raises(TaskError) as caught:
            stack.client.submit(pipeline).result(timeout=60)
        case.time_to_error_s = time.monotonic() - started
        assert caught.value.exception_type == PIPELINE_DEADLINE_ERROR
        assert "deadline of 3 s" in caught.value.exception_message
        assert 3 <= case.time_to_error_s < 10
        assert case.reader.wait_for([pipeline.id], 10).by_pipeline[pipeline.id] == 1
        assert await stack.client.get_status(pipeline.id) == PipelineStatus.FAILED
