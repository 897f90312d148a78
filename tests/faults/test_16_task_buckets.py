"""Task buckets on the real runtime, as users turn them on (`serve --task-buckets 8 --workers 2`):
a group's tasks travel packed (one message per bucket, several tasks to a request), a slow task is
leased after the batch wait (500 ms, not the 5 s inline wait) so its batch-mates' results go on
without it, and the group's result is exact. A worker killed while such a task runs on its lease
does not fail it: the pipeline delivers the attempt again, as StateFun would have delivered a call
of the task's own again."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from flink_tasks import in_parallel
from tests.faults import fault_tasks as ft
from tests.faults import long_tasks as lt
from tests.faults.harness import FaultStack, fault_stack, job_health, record_result

pytestmark = [pytest.mark.integration]

BUCKETS, FAST = 8, 200


@pytest.fixture(scope="module")
def bucket_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with fault_stack(
        tmp_path_factory.mktemp("faults-buckets"),
        62500,
        serve_workers=2,
        serve_args=("--task-buckets", str(BUCKETS), "--task-lease", "6s"),
    ) as stack:
        yield stack


def _metric(stack: FaultStack, name: str, label: str = "") -> int:
    """Sum of serve's /metrics samples `name{...label...}` (all its processes)."""
    return sum(
        value
        for key, value in stack.worker.metrics().items()
        if key.partition("{")[0] == name and label in key
    )


def test_a_fan_out_on_task_buckets_is_packed_and_a_slow_task_is_leased(
    bucket_stack: FaultStack,
) -> None:
    stack = bucket_stack
    before = job_health(stack.runtime)
    group = in_parallel([ft.slow.send(2.0, -1), *(ft.square.send(i) for i in range(FAST))])
    result = stack.client.submit(group, timeout=120).result(timeout=120)
    assert result == [-1, *(i * i for i in range(FAST))]

    tasks = _metric(stack, "flink_tasks_task_batch_size_sum")
    requests = _metric(stack, "flink_tasks_task_batch_size_count")
    assert tasks == FAST + 1
    # 201 chains are staged into 3 child pipelines; each starts its tasks in one step, packed
    # into one message per bucket: at most 3 x 8 messages, so at most that many requests
    assert requests <= 3 * BUCKETS
    # the 2 s task outlived the batch wait (it would have kept its call under the 5 s inline
    # wait without buckets): leased, its result through the task-reports topic
    slow = f'task_type="{ft.slow.type_name}"'
    assert _metric(stack, "flink_tasks_tasks_detached_total", slow) == 1
    assert job_health(stack.runtime).restarts == before.restarts


def test_a_task_whose_worker_is_killed_at_the_batch_wait_is_delivered_again(
    bucket_stack: FaultStack,
) -> None:
    stack = bucket_stack
    before = job_health(stack.runtime)
    slow = f'task_type="{lt.long_async.type_name}"'
    leased_before = _metric(stack, "flink_tasks_tasks_detached_total", slow)
    reader = stack.reply_reader()
    try:
        # 4 s: a call of its own would have held it (5 s inline wait); a bucket's call leases it
        # at the batch wait, and the worker is killed while it runs on that lease
        group = in_parallel([lt.long_async.send("bucket-lost", 4), *map(lt.quick.send, range(20))])
        future = stack.client.submit(group, timeout=120)
        deadline = time.monotonic() + 60
        while _metric(stack, "flink_tasks_tasks_detached_total", slow) <= leased_before:
            assert time.monotonic() < deadline, "the 4 s task was not leased"
            time.sleep(0.05)
        killed = time.monotonic()
        stack.worker.kill()
        stack.worker.start()
        # no retry policy, and no WorkerLostError: the attempt was delivered again
        assert future.result(timeout=120) == ["bucket-lost waited 4s", *(i * i for i in range(20))]
        done = time.monotonic() - killed
        log = reader.wait_for([group.id], timeout=30)
    finally:
        reader.close()
    after = job_health(stack.runtime)
    record_result(
        scenario="serve --task-buckets 8 SIGKILLed during a 4 s task leased at the batch wait",
        pipelines=1,
        result_after_kill_s=round(done, 1),
        job_restarts=after.restarts - before.restarts,
    )
    assert stack.worker.executions("long")["bucket-lost"] == 2
    assert _metric(stack, "flink_tasks_tasks_redelivered_total", slow) == 1
    assert log.by_pipeline[group.id] == 1
    assert after.jid == before.jid and after.state == "RUNNING"
    assert after.restarts == before.restarts
