"""Issue 12: one client, alive for the life of a service, survives what happens to Kafka.

One `FlinkTasksClient` (``send_timeout=5s``) is used through every scenario, never replaced:

1. two broker SIGKILL + restart cycles in a row: while the broker is down a submit fails with
   `TransportError` within ``send_timeout`` + 2 s and ``healthy`` is False; after each restart
   the same client submits successfully within a bounded time;
2. a broker down for 2 minutes: every submit during it fails within ``send_timeout`` + 2 s, the
   first submit after the restart succeeds;
3. injected failures of the client's I/O (its reply consumer's poll raises; the producer's
   kafka-python I/O thread ends): a call pending during the failure still gets its reply, the
   client rebuilds what broke and later calls succeed.

Results are exact and the raw reply reader sees at most one reply per pipeline (exactly-once
egress, ``read_committed``).

Then idempotent submission on the same runtime: each reuse policy (``attach``, ``reject``,
``allow``) and `wait_result` from a second process after the submitting one was SIGKILLed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flink_tasks_client import PipelineExistsError

from flink_tasks.errors import PipelineNotFoundError, TaskError, TransportError
from flink_tasks.types import PipelineStatus
from tests.faults import fault_tasks as ft
from tests.faults.harness import (
    PROJECT_ROOT,
    FaultStack,
    ReplyReader,
    record_result,
)
from tests.faults.workload import fan_out

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEND_TIMEOUT = timedelta(seconds=5)
#: how long after a restart (broker ready) the same client must have a result again
RECOVERY_BOUND_S = 120.0


@pytest.fixture(scope="module")
def service_client(eo_stack: FaultStack) -> Iterator[Any]:
    client = eo_stack.new_client(send_timeout=SEND_TIMEOUT, pipeline_reuse="attach")
    yield client
    client.close()


@pytest.fixture(scope="module")
def reader(eo_stack: FaultStack) -> Iterator[ReplyReader]:
    r = eo_stack.reply_reader()
    yield r
    r.close()


def _wait_until(condition: Any, timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - started


def _submit_fails_fast(client: Any) -> float:
    """A submit while the broker is down: `TransportError` within send_timeout + 2 s."""
    job = fan_out(3, 0.0, "down")
    started = time.monotonic()
    with pytest.raises(TransportError):
        client.submit_sync(job.pipeline, timeout=60)
    elapsed = time.monotonic() - started
    assert elapsed <= SEND_TIMEOUT.total_seconds() + 2, elapsed
    return elapsed


def _submit_succeeds(client: Any, reader: ReplyReader, tag: str) -> tuple[str, float]:
    job = fan_out(5, 0.0, tag)
    started = time.monotonic()
    assert client.submit_sync(job.pipeline, timeout=RECOVERY_BOUND_S) == job.expected
    return job.id, time.monotonic() - started


def _kill_broker(stack: FaultStack) -> None:
    stack.runtime.kafka.stop(kill=True)


def _start_broker(stack: FaultStack) -> float:
    return stack.runtime.kafka.start(stack.runtime.java(for_flink=False), rotate_log=False)


def _assert_one_reply_each(reader: ReplyReader, pipeline_ids: list[str]) -> None:
    """Exactly one final reply (result or error) per pipeline on the reply topic; the replies
    to the status lookups of ``reuse="attach"`` are not counted."""
    # the raw reader may see the status lookups' replies before the final ones
    deadline = time.monotonic() + 120
    while min(reader.final_reply_counts(pipeline_ids).values()) < 1:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert reader.final_reply_counts(pipeline_ids) == dict.fromkeys(pipeline_ids, 1)


def test_two_broker_kills_in_a_row(
    eo_stack: FaultStack, service_client: Any, reader: ReplyReader
) -> None:
    client = service_client
    answered = [_submit_succeeds(client, reader, "before")[0]]
    assert client.healthy
    for cycle in (1, 2):
        _kill_broker(eo_stack)
        unhealthy_s = _wait_until(lambda: not client.healthy, timeout=15)
        assert client.health.reason
        failed_s = _submit_fails_fast(client)
        ready_s = _start_broker(eo_stack)
        healthy_s = _wait_until(lambda: client.healthy, timeout=30)
        pipeline_id, result_s = _submit_succeeds(client, reader, f"after{cycle}")
        answered.append(pipeline_id)
        record_result(
            scenario=f"client: broker SIGKILL + restart, cycle {cycle} (same client object)",
            unhealthy_after_kill_s=round(unhealthy_s, 1),
            transport_error_while_down_s=round(failed_s, 1),
            broker_ready_s=round(ready_s, 1),
            healthy_after_ready_s=round(healthy_s, 1),
            first_result_after_ready_s=round(healthy_s + result_s, 1),
            rebuilds=client.health.rebuilds,
        )
        assert result_s + healthy_s <= RECOVERY_BOUND_S
    _assert_one_reply_each(reader, answered)


def test_broker_down_for_two_minutes(
    eo_stack: FaultStack, service_client: Any, reader: ReplyReader
) -> None:
    client = service_client
    _kill_broker(eo_stack)
    down_at = time.monotonic()
    failures: list[float] = []
    while time.monotonic() - down_at < 120:
        failures.append(_submit_fails_fast(client))
        assert not client.healthy
        time.sleep(min(10.0, max(0.0, 120 - (time.monotonic() - down_at))))
    ready_s = _start_broker(eo_stack)
    healthy_s = _wait_until(lambda: client.healthy, timeout=30)
    pipeline_id, result_s = _submit_succeeds(client, reader, "after-outage")
    record_result(
        scenario="client: broker down for 2 minutes (same client object)",
        submits_while_down=len(failures),
        transport_error_s_max=round(max(failures), 1),
        broker_ready_s=round(ready_s, 1),
        healthy_after_ready_s=round(healthy_s, 1),
        first_result_after_ready_s=round(healthy_s + result_s, 1),
    )
    assert len(failures) >= 8
    _assert_one_reply_each(reader, [pipeline_id])


def test_injected_io_failures(
    eo_stack: FaultStack, service_client: Any, reader: ReplyReader
) -> None:
    client = service_client
    _wait_until(lambda: client.healthy, timeout=30)
    rebuilds = client.health.rebuilds

    # 1. the reply consumer's poll raises while a call waits for its reply
    slow = ft.slow.send(3.0, "slow-value")
    slow.id = f"slow-{uuid.uuid4().hex[:8]}"
    pending = client.submit(slow, timeout=120)
    consumer = client._link.consumer
    real_poll = consumer.poll

    def failing_poll(*args: Any, **kwargs: Any) -> Any:
        consumer.poll = real_poll
        raise RuntimeError("injected failure in the client's I/O thread")

    consumer.poll = failing_poll
    consumer_s = _wait_until(lambda: client.health.rebuilds > rebuilds, timeout=30)
    assert client._link.consumer is not consumer
    assert pending.result(timeout=120) == "slow-value"

    # 2. the producer's kafka-python I/O thread ends
    producer = client._link.producer
    producer._sender.initiate_close()
    producer_s = _wait_until(lambda: client.health.rebuilds > rebuilds + 1, timeout=30)
    assert client._link.producer is not producer
    pipeline_id, result_s = _submit_succeeds(client, reader, "after-injection")
    assert client.healthy
    record_result(
        scenario="client: injected I/O failures (consumer poll raises; producer thread ends)",
        consumer_rebuilt_s=round(consumer_s, 1),
        producer_rebuilt_s=round(producer_s, 1),
        next_result_s=round(result_s, 1),
    )
    _assert_one_reply_each(reader, [slow.id, pipeline_id])


# --- idempotent submission: reuse policies and wait_result --------------------------------


def _slow(seconds: float, value: str) -> Any:
    pipeline = ft.slow.send(seconds, value)
    pipeline.id = f"reuse-{uuid.uuid4().hex[:8]}"
    return pipeline


def _square(x: int, tag: str, pipeline_id: str) -> Any:
    pipeline = ft.square.send(x, 0.0, tag)
    pipeline.id = pipeline_id
    return pipeline


def test_reuse_attach(eo_stack: FaultStack, service_client: Any) -> None:
    client = service_client
    other = eo_stack.new_client(pipeline_reuse="attach")
    try:
        first = _slow(8.0, "first")
        running = client.submit(first, timeout=60)
        _wait_until(lambda: client.get_status_sync(first.id) == PipelineStatus.RUNNING, 30)
        # a retry of a running pipeline waits for it: the same result, not a second run
        retry = ft.slow.send(0.0, "second")
        retry.id = first.id
        assert other.submit_sync(retry, timeout=60) == "first"  # its policy: attach
        assert running.result(timeout=60) == "first"
        # a retry of a finished pipeline answers with its stored result, runs nothing
        tag = f"att{uuid.uuid4().hex[:6]}"
        done_id = f"reuse-{tag}"
        assert client.submit_sync(_square(4, tag, done_id), timeout=60) == 16
        assert other.submit_sync(_square(5, tag, done_id), timeout=60, reuse="attach") == 16
        assert other.enqueue(_square(5, tag, done_id)).result(timeout=60) == done_id
        assert client.get_result_sync(done_id) == 16
        assert sum(eo_stack.worker.executions("square")[f"{tag}:{x}"] for x in (4, 5)) == 1
    finally:
        other.close()


def test_reuse_reject(eo_stack: FaultStack, service_client: Any) -> None:
    client = service_client
    tag = f"rej{uuid.uuid4().hex[:6]}"
    pipeline_id = f"reuse-{tag}"
    assert client.submit_sync(_square(3, tag, pipeline_id), timeout=60, reuse="reject") == 9
    with pytest.raises(PipelineExistsError, match="COMPLETED") as caught:
        client.submit_sync(_square(6, tag, pipeline_id), timeout=60, reuse="reject")
    assert caught.value.status == PipelineStatus.COMPLETED
    with pytest.raises(PipelineExistsError):
        client.enqueue(_square(6, tag, pipeline_id), reuse="reject").result(timeout=60)
    assert eo_stack.worker.executions("square")[f"{tag}:6"] == 0


def test_reuse_allow(eo_stack: FaultStack, service_client: Any) -> None:
    client = service_client
    tag = f"alw{uuid.uuid4().hex[:6]}"
    pipeline_id = f"reuse-{tag}"
    assert client.submit_sync(_square(2, tag, pipeline_id), timeout=60, reuse="allow") == 4
    assert client.submit_sync(_square(7, tag, pipeline_id), timeout=60, reuse="allow") == 49
    assert client.get_result_sync(pipeline_id) == 49
    counts = eo_stack.worker.executions("square")
    assert (counts[f"{tag}:2"], counts[f"{tag}:7"]) == (1, 1)
    # allow still never runs an id twice at once: the engine refuses a running one
    first = _slow(8.0, "first")
    running = client.submit(first, timeout=60)
    _wait_until(lambda: client.get_status_sync(first.id) == PipelineStatus.RUNNING, 30)
    again = ft.slow.send(0.0, "again")
    again.id = first.id
    with pytest.raises(TaskError, match="already running"):
        client.submit_sync(again, timeout=60, reuse="allow")
    assert running.result(timeout=60) == "first"


def _client_env(stack: FaultStack) -> dict[str, str]:
    """The environment of `tests.faults.client_main` for this runtime."""
    s = stack.settings
    return {
        **os.environ,
        "FLINK_TASKS_BOOTSTRAP_SERVERS": s.bootstrap_servers,
        "FLINK_TASKS_REQUEST_TOPIC": s.requests_topic,
        "FLINK_TASKS_ACTION_TOPIC": s.actions_topic,
        "FLINK_TASKS_REPLY_TOPIC": s.replies_topic,
        "FLINK_TASKS_EVENTS_TOPIC": s.events_topic,
    }


def test_wait_result_from_another_process_after_the_first_was_killed(
    eo_stack: FaultStack, service_client: Any, tmp_path: Path
) -> None:
    env = _client_env(eo_stack)
    pipeline_id = f"crash-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "tests.faults.client_main"]
    with (tmp_path / "first.log").open("wb") as first_log:
        first = subprocess.Popen(
            [*command, "submit", pipeline_id, "8", "survived"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=first_log,
            start_new_session=True,
        )
    assert first.stdout is not None
    try:
        assert first.stdout.readline().strip() == b"SENT"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.stdout.close()
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
    assert service_client.get_status_sync(pipeline_id) == PipelineStatus.RUNNING
    started = time.monotonic()
    second = subprocess.run(
        [*command, "wait", pipeline_id],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert second.returncode == 0, second.stderr.decode()[-2000:]
    assert json.loads(second.stdout.decode().strip().splitlines()[-1]) == "survived"
    # a finished pipeline: the stored result, from yet another waiter
    assert service_client.wait_result_sync(pipeline_id, timeout=30) == "survived"
    with pytest.raises(PipelineNotFoundError):
        service_client.wait_result_sync(f"never-{uuid.uuid4().hex[:8]}", timeout=30)
    record_result(
        scenario="client: wait_result from a second process after the submitter was SIGKILLed",
        waited_s=round(time.monotonic() - started, 1),
    )


#: longer than kafka-python's request timeout (30 s): requests in flight at the stop time out
STOPPED_S = 35.0


def test_a_client_stopped_while_its_pipeline_ran_gets_the_result(
    eo_stack: FaultStack, service_client: Any, tmp_path: Path
) -> None:
    """The submitting process is frozen (SIGSTOP: a laptop asleep, a paused container) while its
    pipeline runs, until the pipeline has finished and the client's Kafka requests have timed
    out; resumed, it reads the result that arrived meanwhile. (Frozen in the middle of a send,
    a client fails that send with `TransportError` on resume: its ``send_timeout`` has passed.)"""
    pipeline_id = f"frozen-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "tests.faults.client_main", "run", pipeline_id, "20", "late"]
    with (tmp_path / "client.log").open("wb") as log:
        client = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=_client_env(eo_stack),
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    assert client.stdout is not None
    try:
        # its request has reached the pipeline function: the client only reads from now on
        _wait_until(
            lambda: service_client.get_status_sync(pipeline_id) == PipelineStatus.RUNNING, 60
        )
        os.kill(client.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        _wait_until(
            lambda: service_client.get_status_sync(pipeline_id) == PipelineStatus.COMPLETED, 60
        )
        time.sleep(max(0.0, STOPPED_S - (time.monotonic() - stopped_at)))  # the fault's length
        os.kill(client.pid, signal.SIGCONT)
        resumed_at = time.monotonic()
        out, _ = client.communicate(timeout=120)
    finally:
        client.stdout.close()
        if client.poll() is None:
            os.kill(client.pid, signal.SIGKILL)
            client.wait(timeout=10)
    assert client.returncode == 0, (tmp_path / "client.log").read_text()[-2000:]
    assert json.loads(out.decode().strip().splitlines()[-1]) == "late"
    record_result(
        scenario=f"client: SIGSTOPped {STOPPED_S:g} s while its pipeline ran, then SIGCONT",
        result_after_resume_s=round(time.monotonic() - resumed_at, 1),
    )


def test_a_frozen_broker(eo_stack: FaultStack, service_client: Any, reader: ReplyReader) -> None:
    """The broker SIGSTOPped for longer than the Kafka clients' request timeouts (a paused VM,
    a stalled disk): its connections stay open but nothing answers. A submit fails with
    `TransportError` within ``send_timeout`` + 2 s, a pipeline in flight at the freeze
    completes once afterwards, and the same client submits again once the broker is back."""
    client = service_client
    broker = eo_stack.runtime.kafka.process.pid
    assert broker is not None
    tag = f"frz{uuid.uuid4().hex[:6]}"
    in_flight = fan_out(20, 0.2, tag)
    pending = client.submit(in_flight.pipeline, timeout=RECOVERY_BOUND_S + STOPPED_S)
    _wait_until(  # it runs
        lambda: any(k.startswith(f"{tag}:") for k in eo_stack.worker.executions("square")), 30
    )
    os.kill(broker, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        failed_s = _submit_fails_fast(client)
        time.sleep(max(0.0, STOPPED_S - (time.monotonic() - frozen_at)))  # the fault's length
    finally:
        os.kill(broker, signal.SIGCONT)
    resumed_at = time.monotonic()
    assert pending.result(timeout=RECOVERY_BOUND_S) == in_flight.expected
    in_flight_s = time.monotonic() - resumed_at
    healthy_s = _wait_until(lambda: client.healthy, timeout=30)
    pipeline_id, result_s = _submit_succeeds(client, reader, "after-freeze")
    record_result(
        scenario=f"client: broker SIGSTOPped {STOPPED_S:g} s (same client object)",
        transport_error_while_frozen_s=round(failed_s, 1),
        in_flight_result_after_resume_s=round(in_flight_s, 1),
        healthy_after_resume_s=round(healthy_s, 1),
        rebuilds=client.health.rebuilds,
        first_new_result_s=round(result_s, 1),
    )
    _assert_one_reply_each(reader, [in_flight.id, pipeline_id])
