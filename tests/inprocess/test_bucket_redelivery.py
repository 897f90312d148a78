"""A worker lost while it runs a task leased at a bucket's batch wait: the pipeline sends the same
attempt again, as StateFun would have delivered a call of the task's own again, so the batch wait
changes when results come, not what happens. Past the moment a call of its own would have been
answered, a lost worker fails the attempt as `WorkerLostError`, as without buckets.

A lost worker is its running attempts cancelled: no more beats, no result (what a killed
process leaves). The same on the real runtime, with SIGKILL: tests/faults/test_16_task_buckets.py.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from flink_tasks import FlinkTasks, RetryPolicy, TaskError, WorkerLostError, in_parallel
from flink_tasks._proto import messages_pb2
from flink_tasks.engine import EngineSettings
from flink_tasks.engine.leases import MAX_REDELIVERIES
from flink_tasks.testing import PipelineEnvironment
from flink_tasks.worker.attempts import Attempt
from flink_tasks.worker.reports import ReportSink

tasks = FlinkTasks()
RUNS: Counter[str] = Counter()


@tasks.bind()
async def quick(i: int) -> int:
    return i


@tasks.bind()
async def counted(key: str, seconds: float) -> str:
    RUNS[key] += 1
    await asyncio.sleep(seconds)
    return f"{key} after {RUNS[key]} runs"


@tasks.bind(retry_policy=RetryPolicy(retry_for=[WorkerLostError], max_retries=2))
async def counted_with_retries(key: str, seconds: float) -> str:
    RUNS[key] += 1
    await asyncio.sleep(seconds)
    return f"{key} after {RUNS[key]} runs"


def _env(*, buckets: int = 4, **options: Any) -> PipelineEnvironment:
    options = {"batch_wait": timedelta(milliseconds=100), **options}
    return PipelineEnvironment.in_process(
        tasks, engine=EngineSettings(task_buckets=buckets), default_timeout=30, **options
    )


async def _lose_worker_when(env: PipelineEnvironment, ready: Callable[[Attempt], bool]) -> None:
    """Wait until a running, leased attempt is `ready`, then cancel every running attempt."""
    assert env.worker is not None
    running = env.worker._attempts
    deadline = time.monotonic() + 20
    while not any(a.reporter is not None and ready(a) for a in running._running.values()):
        assert time.monotonic() < deadline, "no leased attempt became ready"
        await asyncio.sleep(0.01)
    await running.drain(0)


def _has_run(attempt: Attempt, seconds: float) -> bool:
    started = attempt.started_at
    return started is not None and time.monotonic() - started >= seconds


async def _failure(future: Any) -> TaskError:
    with pytest.raises(TaskError) as caught:
        await asyncio.wrap_future(future)
    assert caught.value.exception_type == "flink_tasks.AggregatedError"
    return caught.value


def _group_failure(error: TaskError) -> list[str]:
    """The chains' errors of a group's `AggregatedError`: type, and how often it was delivered."""
    lines = error.exception_message.splitlines()[1:]
    out = []
    for line in lines:
        kind = next(word for word in line.split() if word.startswith("flink_tasks."))
        times = line[line.rindex("(delivered") :] if "(delivered" in line else ""
        out.append(f"{kind.rstrip(':')} ...{' ' + times if times else ''}")
    return out


async def test_an_attempt_lost_at_the_batch_wait_is_delivered_again() -> None:
    key = "again"
    async with _env(lease=timedelta(milliseconds=600)) as env:
        group = in_parallel([quick.send(1), counted.send(key, 1.0), quick.send(2)])
        future = env.client.submit(group, timeout=30)
        # leased at the 0.1 s batch wait, well before serve's 5 s inline wait
        await _lose_worker_when(env, lambda a: a.said_redeliverable and a.delivery == 0)
        # no retry policy: the second run is a delivery, as StateFun would have made
        assert await asyncio.wrap_future(future) == [1, f"{key} after 2 runs", 2]
        assert RUNS[key] == 2
        assert env.worker is not None  # what an operator sees
        redelivered = "flink_tasks_tasks_redelivered_total"
        assert env.worker.metrics.value(redelivered, task_type=counted.type_name) == 1


async def test_redelivery_is_bounded() -> None:
    key = "always lost"
    async with _env(lease=timedelta(milliseconds=300)) as env:
        future = env.client.submit(in_parallel([counted.send(key, 5.0)]), timeout=30)
        for delivery in range(MAX_REDELIVERIES + 1):
            await _lose_worker_when(env, lambda a, d=delivery: a.delivery == d)  # type: ignore[misc]
        assert _group_failure(await _failure(future)) == [
            f"flink_tasks.WorkerLostError ... (delivered {MAX_REDELIVERIES + 1} times)"
        ]
        assert env.worker is not None
        redelivered = "flink_tasks_tasks_redelivered_total"
        assert (
            env.worker.metrics.value(redelivered, task_type=counted.type_name) == MAX_REDELIVERIES
        )
        assert RUNS[key] == MAX_REDELIVERIES + 1


async def test_an_attempt_lost_past_its_own_calls_inline_wait_fails_as_lost() -> None:
    key = "past the inline wait"
    # beats every second (a third of the lease): only the beat sent when the inline wait
    # (0.4 s) has passed tells the pipeline that a call of its own would have been answered
    async with _env(lease=timedelta(seconds=3), inline_wait=timedelta(milliseconds=400)) as env:
        future = env.client.submit(in_parallel([counted.send(key, 3.0)]), timeout=30)
        await _lose_worker_when(env, lambda a: _has_run(a, 0.6))  # before the heartbeat at 1.1 s
        assert _group_failure(await _failure(future)) == ["flink_tasks.WorkerLostError ..."]
        assert RUNS[key] == 1


async def test_a_retried_group_task_is_watched_from_its_first_beat() -> None:
    key = "retried"
    # no buckets: the group's task is leased at the inline wait; attempt 1 is lost after a
    # heartbeat (beat 1), attempt 2 right after its lease (beat 0), attempt 3 succeeds. The
    # lost attempt 2 is noticed only if its beat 0 counts although attempt 1 had reached 1.
    async with _env(
        buckets=0, lease=timedelta(milliseconds=600), inline_wait=timedelta(milliseconds=100)
    ) as env:
        future = env.client.submit(in_parallel([counted_with_retries.send(key, 1.5)]), timeout=20)
        await _lose_worker_when(env, lambda a: a.request.attempt == 1 and a.beat >= 1)
        await _lose_worker_when(env, lambda a: a.request.attempt == 2)
        assert await asyncio.wrap_future(future) == [f"{key} after 3 runs"]


class BeatlessSink:
    """The task-reports path of a worker that lost its way to Kafka for a while: the beats of
    first deliveries are lost, everything else arrives."""

    def __init__(self, inner: ReportSink) -> None:
        self.inner = inner
        self.max_report_bytes = inner.max_report_bytes

    def send(self, pipeline_id: str, report: bytes) -> None:
        parsed = messages_pb2.WorkerReport.FromString(report)
        if parsed.HasField("running") and parsed.running.delivery == 0:
            return
        self.inner.send(pipeline_id, report)

    def close(self, timeout: float = 10.0) -> None:
        self.inner.close(timeout)


async def test_a_live_worker_delivered_again_joins_its_attempt_and_stays_watched() -> None:
    key = "joined"
    async with _env(lease=timedelta(milliseconds=600)) as env:
        assert env.worker is not None and env.worker.reports is not None
        env.worker.reports = BeatlessSink(env.worker.reports)
        future = env.client.submit(in_parallel([counted.send(key, 2.0)]), timeout=20)
        # its beats are lost, so the pipeline delivers it again: this process still runs it,
        # so the delivery joins the running attempt (no second run) and takes its number
        await _lose_worker_when(env, lambda a: a.delivery == 1)
        # then the worker is lost for real: only a lease on the joined delivery notices
        assert await asyncio.wrap_future(future) == [f"{key} after 2 runs"]
        assert RUNS[key] == 2


async def test_an_attempt_abandoned_while_its_call_holds_it_runs_out_its_lease() -> None:
    key = "abandoned in its call"
    # a worker stopping with tasks still running cancels them: one whose call is still held
    # (a 1 s batch wait) is answered with a lease, which runs out; the pipeline delivers it again
    async with _env(lease=timedelta(milliseconds=600), batch_wait=timedelta(seconds=1)) as env:
        assert env.worker is not None
        running = env.worker._attempts
        future = env.client.submit(in_parallel([counted.send(key, 1.5)]), timeout=20)
        deadline = time.monotonic() + 10
        while not any(a.started_at and a.reporter is None for a in running._running.values()):
            assert time.monotonic() < deadline, "the task did not start"
            await asyncio.sleep(0.01)
        await running.drain(0)
        assert await asyncio.wrap_future(future) == [f"{key} after 2 runs"]
