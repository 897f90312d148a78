"""Task buckets (`EngineSettings.task_buckets`): StateFun batches a pipeline's tasks per bucket
address, the worker runs a batch's tasks concurrently, and a slow task holds its batch for at most
the inline wait (it is leased; the fast results leave without it)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from statefun import request_reply_v3

from flink_tasks import FlinkTasks, in_parallel, wire
from flink_tasks._proto import messages_pb2
from flink_tasks.engine import EngineSettings
from flink_tasks.testing import PipelineEnvironment
from flink_tasks.worker.functions import PACK_BYTES

tasks = FlinkTasks()
ENDED: dict[int, float] = {}


@tasks.bind()
async def wait_and_echo(i: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    ENDED[i] = time.monotonic()
    return i


def _task_calls(env: PipelineEnvironment) -> tuple[int, int]:
    assert env.runtime is not None
    stats = [
        s for (typename, _), s in env.runtime.stats.items() if typename != wire.PIPELINE_FUNCTION
    ]
    return sum(s.batches for s in stats), sum(s.invocations for s in stats)


def _pipeline_messages(env: PipelineEnvironment) -> int:
    assert env.runtime is not None
    stats = env.runtime.stats
    return sum(s.invocations for (t, _), s in stats.items() if t == wire.PIPELINE_FUNCTION)


async def test_a_fan_out_needs_fewer_requests_and_messages_than_tasks() -> None:
    settings = EngineSettings(task_buckets=4)
    async with PipelineEnvironment.in_process(tasks, engine=settings) as env:
        result = await env.submit_async(
            in_parallel([wait_and_echo.send(i, 0) for i in range(1000)])
        )
        assert result == list(range(1000))
        calls, messages = _task_calls(env)
        # 10 stages of 100 (automatic staging), each starts its tasks in one step and packs
        # them into one message per bucket
        assert messages == 40
        assert calls <= messages
        metrics = env.worker.metrics  # what an operator sees: tasks per request
        assert metrics.value("flink_tasks_task_batch_size_count") == calls
        assert metrics.value("flink_tasks_task_batch_size_sum") == 1000
        # the results come back packed too: one message per call and stage, not per task
        assert _pipeline_messages(env) < 100
        # a packed message counts once, so the batch sizes still add up to the message counts
        counted = {
            kind: metrics.value("flink_tasks_pipeline_messages_total", message_type=kind)
            for kind in ("PipelineRequest", "PipelineMessage", "TaskResult", "TaskResults")
        }
        assert counted["TaskResults"] >= 1
        assert sum(counted.values()) == metrics.value("flink_tasks_pipeline_batch_size_sum")


async def test_without_buckets_every_task_is_its_own_request() -> None:
    settings = EngineSettings(task_buckets=0)  # not the default: pytest --task-buckets changes that
    async with PipelineEnvironment.in_process(tasks, engine=settings) as env:
        result = await env.submit_async(in_parallel([wait_and_echo.send(i, 0) for i in range(100)]))
        assert result == list(range(100))
        assert _task_calls(env) == (100, 100)
        assert _pipeline_messages(env) >= 100  # a result message per task


async def test_a_slow_task_does_not_hold_back_the_fast_results_of_its_batch() -> None:
    settings = EngineSettings(task_buckets=4)
    # serve's default inline wait (5 s): the batch wait (0.5 s) bounds a bucket's calls
    env = PipelineEnvironment.in_process(tasks, engine=settings, lease=timedelta(seconds=3))
    arrived: dict[int, float] = {}  # slot - 1 -> when its result reached the pipeline function
    handle = env.worker.handle

    async def timed(body: bytes) -> bytes:
        now = time.monotonic()
        for invocation in request_reply_v3.ToFunction.FromString(body).invocation.invocations:
            value = invocation.argument
            result = None
            results: list[messages_pb2.TaskResult] = []
            if value.typename == wire.TASK_RESULT:
                results = [messages_pb2.TaskResult.FromString(value.value)]
            elif value.typename == wire.TASK_RESULTS:
                packed = messages_pb2.TaskResults.FromString(value.value).results
                results = [messages_pb2.TaskResult.FromString(r) for r in packed]
            elif value.typename == wire.WORKER_REPORT:
                report = messages_pb2.WorkerReport.FromString(value.value)
                results = [report.result] if report.HasField("result") else []
            for result in results:
                arrived.setdefault(result.slot - 1, now)
        return await handle(body)

    assert env.runtime is not None
    env.runtime._handler = timed
    ENDED.clear()
    async with env:
        group = in_parallel([wait_and_echo.send(i, 3.0 if i == 0 else 0.01) for i in range(100)])
        assert await env.submit_async(group) == list(range(100))
        # the slow task was leased after the batch wait, so the fast results of its batch (and
        # of the batches queued behind it in its bucket) reached the pipeline before it finished
        assert sorted(arrived) == list(range(100))
        assert max(arrived[i] for i in range(1, 100)) < ENDED[0]
        assert (
            env.worker.metrics.value(
                "flink_tasks_tasks_detached_total", task_type=wait_and_echo.type_name
            )
            >= 1
        )


async def test_a_task_outside_a_group_keeps_its_own_address_and_the_inline_wait() -> None:
    settings = EngineSettings(task_buckets=4)
    async with PipelineEnvironment.in_process(tasks, engine=settings) as env:
        # one step at a time: nothing would queue behind it, so it is not bucketed, and a task
        # longer than the batch wait (0.5 s) but within the inline wait (5 s) is not leased
        pipeline = wait_and_echo.send(7, 1.0)
        assert await env.submit_async(pipeline) == 7
        assert env.runtime is not None
        addresses = [a for (t, a) in env.runtime.stats if t != wire.PIPELINE_FUNCTION]
        assert len(addresses) == 1 and "#b" not in addresses[0]  # not <pipeline>#b<n>
        assert (
            env.worker.metrics.value(
                "flink_tasks_tasks_detached_total", task_type=wait_and_echo.type_name
            )
            == 0
        )


async def test_a_group_with_a_max_parallelism_is_not_bucketed() -> None:
    settings = EngineSettings(task_buckets=4)
    async with PipelineEnvironment.in_process(tasks, engine=settings) as env:
        # released one result at a time: nothing to pack, and a bucket would queue a released
        # task behind its neighbour's call
        group = in_parallel([wait_and_echo.send(i, 0) for i in range(20)], max_parallelism=5)
        assert await env.submit_async(group) == list(range(20))
        assert env.runtime is not None
        addresses = [a for (t, a) in env.runtime.stats if t != wire.PIPELINE_FUNCTION]
        assert len(addresses) == 20 and not any("#b" in a for a in addresses)


@tasks.bind()
def sized(i: int, size: int) -> str:
    return str(i % 10) * size


@tasks.bind()
def heads(values: list[str]) -> list[str]:
    return [value[:2] for value in values]


async def test_packed_messages_stay_under_the_pack_size() -> None:
    settings = EngineSettings(task_buckets=1)  # one bucket: one call gets all 20 tasks
    env = PipelineEnvironment.in_process(tasks, engine=settings)
    sizes: list[tuple[str, int]] = []  # every message the pipeline function got: type, bytes
    handle = env.worker.handle

    async def recorded(body: bytes) -> bytes:
        for invocation in request_reply_v3.ToFunction.FromString(body).invocation.invocations:
            sizes.append((invocation.argument.typename, len(invocation.argument.value)))
        return await handle(body)

    assert env.runtime is not None
    env.runtime._handler = recorded
    async with env:
        # 20 results of 200 KB (4 MB) from one call: no one message of them all
        group = in_parallel([sized.send(i, 200_000) for i in range(20)]).continue_with(heads)
        assert await env.submit_async(group) == [str(i % 10) * 2 for i in range(20)]
    packed = [n for typename, n in sizes if typename == wire.TASK_RESULTS]
    assert len(packed) >= 4
    assert max(packed) <= PACK_BYTES + 64 * 1024  # a result's own framing on top
