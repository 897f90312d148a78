"""Batch tallies reach prometheus_client exactly as one call per batch would."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from flink_tasks.worker.batch_metrics import FLUSH_S
from flink_tasks.worker.metrics import BATCH_BUCKETS, Metrics

SIZES = [1, 1, 2, 3, 7, 50, 51, 999, 1000, 1, 1000]


def _samples(registry: CollectorRegistry, family: str) -> list[str]:
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if line.startswith(family) and "_created" not in line]


def test_flushed_batch_sizes_equal_one_observe_per_batch() -> None:
    metrics = Metrics()
    reference = CollectorRegistry()
    observed = Histogram(
        "flink_tasks_pipeline_batch_size", "x", buckets=BATCH_BUCKETS, registry=reference
    )

    async def batches(sizes: list[int]) -> None:
        for size in sizes:
            metrics.batches.batch_done(size)
            observed.observe(size)

    asyncio.run(batches(SIZES[:5]))
    metrics.batches.flush()
    asyncio.run(batches(SIZES[5:]))
    metrics.batches.flush()
    metrics.batches.flush()  # nothing new: no change
    assert _samples(metrics.registry, "flink_tasks_pipeline_batch_size") == _samples(
        reference, "flink_tasks_pipeline_batch_size"
    )
    assert metrics.value("flink_tasks_pipeline_batch_size_count") == len(SIZES)
    assert metrics.value("flink_tasks_pipeline_batch_size_sum") == sum(SIZES)
    assert metrics.value("flink_tasks_pipeline_batch_size_bucket", le="1.0") == 3


def test_message_counts_are_read_exactly_and_flushed_by_the_timer() -> None:
    metrics = Metrics()
    tally = metrics.batches
    name = "flink_tasks_pipeline_messages_total"

    async def run() -> None:
        tally.messages["io.flink-tasks/task-result"] = 3
        tally.batch_done(3)
        assert tally.armed
        # a read flushes at once
        assert metrics.value(name, message_type="task-result") == 3
        tally.messages["io.flink-tasks/task-result"] += 2
        tally.batch_done(2)
        assert tally.armed
        # the timer flushes without a read (registry.get_sample_value does not flush)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_S + 5
        while metrics.registry.get_sample_value(name, {"message_type": "task-result"}) != 5:
            assert loop.time() < deadline, "no flush within FLUSH_S"
            await asyncio.sleep(0.05)
        assert not tally.armed

    asyncio.run(run())
    assert metrics.value("flink_tasks_pipeline_batch_size_count") == 2
