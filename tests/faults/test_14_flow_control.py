"""Unordered groups, pause points and delayed starts on the real runtime (Kafka + StateFun + a
worker process), on the shared fault runtime (`stack`):

- an unordered group of 1,000 with `max_parallelism=10` returns every result once;
- a pause point inside a nested pipeline, one after a group and one a task asks for through its
  context: PAUSED with nothing after it started, `unpause` continues;
- a countdown survives a StateFun SIGKILL and restore from checkpoint (a durable delayed
  message), and a pipeline waiting on a countdown can be paused and cancelled.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest

from flink_tasks import PipelineCancelledError, PipelineStatus, in_parallel
from tests import pipelines as t
from tests.faults import fault_tasks as f
from tests.faults.harness import FaultStack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.filterwarnings(
        "ignore:.*is deprecated. Use files\\(\\) instead:DeprecationWarning"
    ),
]


@pytest.mark.timeout(900)  # 1,000 tasks 10 at a time: minutes on a busy 2-core box
def test_unordered_group_of_1000_returns_every_result_once(stack: FaultStack) -> None:
    tag = f"un{time.monotonic_ns()}"
    chains = [f.square.send(i, 0.0, tag) for i in range(1000)]
    pipeline = in_parallel(chains, max_parallelism=10, ordered=False)
    result = stack.client.submit(pipeline, timeout=timedelta(minutes=14)).result()
    assert Counter(result) == Counter(i * i for i in range(1000))
    runs = stack.worker.executions("square")
    assert len([k for k in runs if k.startswith(f"{tag}:")]) == 1000


def test_pause_points_in_a_nested_pipeline_after_a_group_and_from_a_task(
    stack: FaultStack,
) -> None:
    client, worker = stack.client, stack.worker
    tag = f"pp{time.monotonic_ns()}"

    def ran(label: str) -> int:
        return sum(n for k, n in worker.executions("square").items() if k.startswith(label))

    # inside a nested pipeline (a chain of a group): the other chain goes on
    nested = f.square.send(2, 0.0, f"{tag}a").wait().continue_with(f.square, 0.0, f"{tag}b")
    pipeline = in_parallel([nested, f.square.send(3, 0.0, f"{tag}c")]).continue_with(f.total)
    future = client.submit(pipeline)
    _until(lambda: client.get_status_sync(pipeline.id) == PipelineStatus.PAUSED)
    _until(lambda: ran(f"{tag}c") == 1)
    assert ran(f"{tag}b") == 0 and not future.done()
    assert client.unpause_sync(pipeline.id) == PipelineStatus.RUNNING
    assert future.result(timeout=60) == 16 + 9

    # after a group
    group = in_parallel([f.square.send(i, 0.0, f"{tag}g") for i in range(3)]).wait()
    pipeline = group.continue_with(f.total).continue_with(f.square, 0.0, f"{tag}after")
    future = client.submit(pipeline)
    _until(lambda: client.get_status_sync(pipeline.id) == PipelineStatus.PAUSED)
    assert ran(f"{tag}g") == 3 and ran(f"{tag}after") == 0 and not future.done()
    client.unpause_sync(pipeline.id)
    assert future.result(timeout=60) == 25

    # asked for by the task itself, through its context (the worker is another process)
    pipeline = t.pause_after_me.send(4).continue_with(f.square, 0.0, f"{tag}ctx")
    future = client.submit(pipeline)
    _until(lambda: client.get_status_sync(pipeline.id) == PipelineStatus.PAUSED)
    assert ran(f"{tag}ctx") == 0
    client.unpause_sync(pipeline.id)
    assert future.result(timeout=60) == 16


def test_countdown_survives_a_statefun_restart(stack: FaultStack) -> None:
    tag = f"cd{time.monotonic_ns()}"
    countdown = timedelta(seconds=20)
    timed = t.started_at.send().set(countdown=countdown)
    counted = f.square.send(7, 0.0, tag).set(countdown=countdown)
    submitted = time.time()
    futures = [stack.client.submit(p, timeout=timedelta(minutes=4)) for p in (timed, counted)]
    _until(lambda: stack.client.get_status_sync(counted.id) == PipelineStatus.RUNNING)
    stack.runtime.wait_for_checkpoint()  # the pending delayed starts are in it
    assert time.time() < submitted + countdown.total_seconds()
    stack.runtime.restart_statefun(from_checkpoint=True, kill=True)
    started, squared = (future.result() for future in futures)
    assert started >= submitted + countdown.total_seconds()
    assert squared == 49
    assert stack.worker.executions("square")[f"{tag}:7"] == 1


def test_pause_and_cancel_while_waiting_on_a_countdown(stack: FaultStack) -> None:
    client, worker = stack.client, stack.worker
    tag = f"cw{time.monotonic_ns()}"
    countdown = timedelta(seconds=4)
    paused = f.square.send(5, 0.0, f"{tag}p").set(countdown=countdown)
    cancelled = f.square.send(6, 0.0, f"{tag}c").set(countdown=countdown)
    submitted = time.monotonic()
    paused_future, cancelled_future = client.submit(paused), client.submit(cancelled)
    _until(lambda: client.get_status_sync(paused.id) == PipelineStatus.RUNNING)
    assert client.pause_sync(paused.id) == PipelineStatus.PAUSED
    _until(lambda: client.get_status_sync(cancelled.id) == PipelineStatus.RUNNING)
    client.cancel_sync(cancelled.id)
    with pytest.raises(PipelineCancelledError):
        cancelled_future.result(timeout=60)
    # both countdowns fall due (and are seen by the pipelines) with neither task starting
    _until(lambda: time.monotonic() > submitted + countdown.total_seconds() + 2, timeout=30)
    assert client.get_status_sync(paused.id) == PipelineStatus.PAUSED
    assert client.get_status_sync(cancelled.id) == PipelineStatus.CANCELLED
    runs = worker.executions("square")
    assert runs[f"{tag}p:5"] == 0 and runs[f"{tag}c:6"] == 0
    client.unpause_sync(paused.id)
    assert paused_future.result(timeout=60) == 25
    assert worker.executions("square")[f"{tag}p:5"] == 1


def _until(condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        time.sleep(0.1)
