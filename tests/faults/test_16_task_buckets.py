"""Task buckets on the real runtime, as users turn them on (`serve --task-buckets 8 --workers 2`):
a group's tasks travel packed (one message per bucket, several tasks to a request), a slow task is
leased after the batch wait (500 ms, not the 5 s inline wait) so its batch-mates' results go on
without it, and the group's result is exact."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flink_tasks import in_parallel
from tests.faults import fault_tasks as ft
from tests.faults.harness import FaultStack, fault_stack, job_health

pytestmark = [pytest.mark.integration]

BUCKETS, FAST = 8, 200


@pytest.fixture(scope="module")
def bucket_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with fault_stack(
        tmp_path_factory.mktemp("faults-buckets"),
        62500,
        serve_workers=2,
        serve_args=("--task-buckets", str(BUCKETS)),
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
