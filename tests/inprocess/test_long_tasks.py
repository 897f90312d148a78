"""Tasks that outlive the worker's inline wait: answered with a lease, heartbeats and the result
through the task-reports path, a durable deadline for a worker that goes silent, and one
application per attempt however often a result arrives."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from flink_tasks import FlinkTasks, RetryPolicy, TaskError, WorkerLostError, in_parallel
from flink_tasks._proto import messages_pb2
from flink_tasks.testing import PipelineEnvironment
from flink_tasks.worker.reports import ReportSink
from flink_tasks.worker.task_runner import PoolSettings

tasks = FlinkTasks()
RUNS: Counter[str] = Counter()


@tasks.bind()
async def slow(x: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return x * 10


@tasks.bind()
def slow_sync(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x + 1


@tasks.bind(with_state=True)
async def slow_append(state: Any, *labels: str) -> tuple[Any, str]:
    """Appends its last label to the state (a list) after 0.4 s ("now" labels at once)."""
    label = labels[-1]
    await asyncio.sleep(0.0 if label.startswith("now") else 0.4)
    return [*(state or []), label], label


@tasks.bind(with_state=True)
def state_of(state: Any, *_previous: Any) -> tuple[Any, Any]:
    return state, state


@tasks.bind(retry_policy=RetryPolicy(retry_for=[WorkerLostError], max_retries=2))
async def lost_once(key: str, seconds: float) -> str:
    RUNS[key] += 1
    await asyncio.sleep(seconds)
    return f"{key} after {RUNS[key]} runs"


@tasks.bind()
async def never_retried(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


@tasks.bind()
async def slow_big_orchestrator(seconds: float, size: int) -> Any:
    """Longer than the inline wait, then returns a pipeline of `size` tasks (~55 bytes each)."""
    await asyncio.sleep(seconds)
    return in_parallel([slow.send(i, 0.0) for i in range(size)])


@tasks.bind()
async def slow_orchestrator(seconds: float, child_seconds: float) -> Any:
    """Longer than the inline wait, then returns a pipeline that runs longer than the lease."""
    await asyncio.sleep(seconds)
    return slow.send(1, child_seconds).continue_with(slow, child_seconds)


class SilentSink:
    """A task-reports path that loses every report of first attempts, as if the worker running
    them had been cut off after its first answer."""

    def __init__(self, inner: ReportSink) -> None:
        self.inner = inner
        self.max_report_bytes = inner.max_report_bytes
        self.dropped = 0

    def send(self, pipeline_id: str, report: bytes) -> None:
        parsed = messages_pb2.WorkerReport.FromString(report)
        about = parsed.running if parsed.HasField("running") else parsed.result
        if about.attempt == 1:
            self.dropped += 1
            return
        self.inner.send(pipeline_id, report)

    def close(self, timeout: float = 10.0) -> None:
        self.inner.close(timeout)


class DoublingSink(SilentSink):
    """Delivers every report twice, as an at-least-once path may."""

    def send(self, pipeline_id: str, report: bytes) -> None:
        self.inner.send(pipeline_id, report)
        self.inner.send(pipeline_id, report)


class LateSink(SilentSink):
    """Delivers every report in order, but `delay` seconds late: the task-reports topic read
    behind a backlog (StateFun stops reading its ingress while its calls are at their limit)."""

    def __init__(self, inner: ReportSink, delay: float) -> None:
        super().__init__(inner)
        self.delay = delay
        self.checks = 0

    def send(self, pipeline_id: str, report: bytes) -> None:
        if messages_pb2.WorkerReport.FromString(report).HasField("lease_check"):
            self.checks += 1
        loop = asyncio.get_running_loop()
        loop.call_later(self.delay, self.inner.send, pipeline_id, report)


def _long_env(**options: Any) -> Any:
    options = {"inline_wait": timedelta(milliseconds=100), **options}
    return PipelineEnvironment.in_process(
        tasks, default_timeout=30, lease=timedelta(milliseconds=600), **options
    )


def _count_replies(env: PipelineEnvironment) -> Counter[str]:
    replies: Counter[str] = Counter()

    def listen(topic: str, key: str, payload: bytes) -> None:
        if topic.endswith(".replies"):
            replies[key] += 1

    assert env.runtime is not None
    env.runtime.add_egress_listener(listen)
    return replies


async def test_a_task_longer_than_the_inline_wait_reports_its_result_with_heartbeats() -> None:
    async with _long_env() as env:
        replies = _count_replies(env)
        sink = env.worker.reports  # type: ignore[union-attr]
        pipeline = slow.send(4, 1.5).continue_with(slow_sync, 1.2)
        assert await env.submit_async(pipeline) == 41
        # 2 results, and heartbeats every 200 ms for ~2.5 s
        assert sink.sent >= 2 + 8  # type: ignore[union-attr]
        assert replies[pipeline.id] == 1


async def test_long_and_short_chains_of_a_group_each_apply_once() -> None:
    async with _long_env() as env:
        replies = _count_replies(env)
        group = in_parallel([slow.send(i, 0.6 if i % 2 else 0.0) for i in range(10)])
        assert await env.submit_async(group) == [i * 10 for i in range(10)]
        assert replies[group.id] == 1


async def test_results_delivered_twice_are_applied_once() -> None:
    async with _long_env() as env:
        replies = _count_replies(env)
        env.worker.reports = DoublingSink(env.worker.reports)  # type: ignore[union-attr,arg-type]
        pipeline = (
            slow_append.send("a")
            .continue_with(slow_append, "b")
            .continue_with(in_parallel([slow_append.send("c"), slow_append.send("now-d")]))
            .continue_with(state_of)
            .with_initial(state=[])
        )
        # each application appends once: a duplicate would repeat a label
        assert await env.submit_async(pipeline) == ["a", "b", "c"]
        assert replies[pipeline.id] == 1


async def test_a_live_worker_whose_reports_come_late_is_not_taken_for_lost() -> None:
    """Beats and the result arrive 1.5 s late, the lease is 0.6 s: the lease falls due, but its
    check travels the same late path and arrives after them, so the task is not failed."""
    async with _long_env() as env:
        replies = _count_replies(env)
        sink = LateSink(env.worker.reports, delay=1.5)  # type: ignore[arg-type]
        env.worker.reports = sink  # type: ignore[union-attr]
        pipeline = never_retried.send(1.0)
        assert await env.submit_async(pipeline) == "done"
        assert sink.checks >= 1  # the lease did fall due (the old rule failed the task here)
        assert replies[pipeline.id] == 1


async def test_a_silent_worker_fails_the_attempt_as_lost_and_the_policy_retries_it() -> None:
    async with _long_env() as env:
        replies = _count_replies(env)
        sink = SilentSink(env.worker.reports)  # type: ignore[arg-type]
        env.worker.reports = sink  # type: ignore[union-attr]
        started = time.monotonic()
        lost = env.client.submit(never_retried.send(3.0), timeout=30)
        retried = env.client.submit(lost_once.send("k", 1.0), timeout=30)
        with pytest.raises(TaskError) as caught:
            await asyncio.wrap_future(lost)
        assert caught.value.exception_type == "flink_tasks.WorkerLostError"
        assert "sent no word for 0.6 s" in caught.value.exception_message
        # the lease (0.6 s) ended it, long before the task's own 3 s
        assert time.monotonic() - started < 2.5
        assert await asyncio.wrap_future(retried) == "k after 2 runs"
        assert sum(replies.values()) == 2
        assert sink.dropped >= 2


async def test_a_leased_orchestrator_is_not_lost_while_the_pipeline_it_returned_runs() -> None:
    # the orchestrator's lease (0.6 s) is settled by its result; its child then runs ~2 s
    async with _long_env() as env:
        pipeline = slow_orchestrator.send(0.3, 1.0)
        assert await env.submit_async(pipeline) == 100
        assert (
            env.worker.metrics.value(
                "flink_tasks_tasks_detached_total", task_type=slow_orchestrator.type_name
            )
            == 1
        )


async def test_a_leased_result_above_the_report_limit_fails_clearly_and_others_go_on() -> None:
    # past the inline wait, a result goes over the task-reports topic (a Kafka record, 1 MiB by
    # default): one too large for it fails its task at once with SerializationError, and the
    # reports of the task beside it (heartbeats, result) are not held behind it
    async with _long_env() as env:
        big = asyncio.ensure_future(env.submit_async(slow_big_orchestrator.send(0.3, 30_000)))
        beside = asyncio.ensure_future(env.submit_async(slow.send(7, 1.0)))
        with pytest.raises(TaskError) as caught:
            await big
        assert caught.value.exception_type == "flink_tasks.SerializationError"
        assert "task-reports topic, whose limit is 1044480 bytes" in str(caught.value)
        assert await beside == 70


async def test_a_task_queued_for_a_pool_slot_keeps_its_call_instead_of_a_lease() -> None:
    # one pool thread, four 0.3 s tasks: the last waits 0.9 s for the thread, past the inline
    # wait (0.5 s) counted from the call; counted from each task's start, none is leased
    async with _long_env(
        inline_wait=timedelta(milliseconds=500), pool=PoolSettings(kind="thread", size=1)
    ) as env:
        group = in_parallel([slow_sync.send(i, 0.3) for i in range(4)])
        assert await env.submit_async(group) == [1, 2, 3, 4]
        detached = env.worker.metrics.value(
            "flink_tasks_tasks_detached_total", task_type=slow_sync.type_name
        )
        assert detached == 0


async def test_a_task_queued_past_the_queue_wait_is_leased_and_still_completes() -> None:
    # the thread is held by a 1.5 s task (leased after its 0.5 s inline wait); the three queued
    # behind it are leased after 0.3 s in the queue, and their results come by the reports path
    async with _long_env(
        inline_wait=timedelta(milliseconds=500),
        queue_wait=timedelta(milliseconds=300),
        pool=PoolSettings(kind="thread", size=1),
    ) as env:
        group = in_parallel([slow_sync.send(0, 1.5)] + [slow_sync.send(i, 0.1) for i in (1, 2, 3)])
        assert await env.submit_async(group) == [1, 2, 3, 4]
        detached = env.worker.metrics.value(
            "flink_tasks_tasks_detached_total", task_type=slow_sync.type_name
        )
        assert detached == 4
