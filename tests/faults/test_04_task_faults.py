"""Scenario 4: task-level faults. A task that hangs past its timeout, a worker that answers
HTTP 500 for a few seconds (as a failing proxy would), and a slow worker: each task fails (or
completes) with a clear outcome the pipeline can handle (`exceptionally`, retries); the Flink job
neither fails nor restarts (REST: same job id, `numRestarts` unchanged), and other pipelines are
unaffected."""

from __future__ import annotations

import time

import pytest

from flink_tasks import TaskError
from tests.faults import fault_tasks as ft
from tests.faults.harness import FaultStack, job_health, record_result
from tests.faults.workload import collect, fan_out, mixed, submit_all

pytestmark = [pytest.mark.integration]


def test_task_hanging_past_its_timeout(stack: FaultStack) -> None:
    client = stack.client
    before = job_health(stack.runtime)
    started = time.monotonic()
    hung = client.submit(ft.hang.send(60), timeout=60)
    handled = client.submit(ft.hang.send(60).exceptionally(ft.describe_error, "x"), timeout=60)
    retried = client.submit(ft.hang_retried.send(60), timeout=60)
    others = [fan_out(100, 0.0, "tohang") for _ in range(2)]
    submit_all(client, others)
    other_outcome = collect(others, timeout=60)
    others_done = time.monotonic() - started

    with pytest.raises(TaskError) as caught:
        hung.result(timeout=60)
    assert caught.value.exception_type == "flink_tasks.TaskTimeoutError"
    assert "did not finish within 1 s" in caught.value.exception_message
    recovered = handled.result(timeout=60)
    assert recovered[:2] == ["recovered", "flink_tasks.TaskTimeoutError"]
    assert recovered[-1] == "x"
    with pytest.raises(TaskError) as caught_retried:
        retried.result(timeout=60)
    assert caught_retried.value.exception_type == "flink_tasks.TaskTimeoutError"
    assert "3 attempts" in caught_retried.value.exception_message
    after = job_health(stack.runtime)
    record_result(
        scenario="task hangs past its 1 s timeout (plain, exceptionally, 2 retries)",
        pipelines=3 + len(others),
        completed_correctly=other_outcome.completed_correctly + 3,
        other_pipelines_done_s=round(others_done, 1),
        job_restarts=after.restarts - before.restarts,
    )
    assert other_outcome.completed_correctly == len(others)
    assert after.jid == before.jid and after.state == "RUNNING"
    assert after.restarts == before.restarts


@pytest.mark.parametrize(
    ("mode", "seconds", "delay"),
    [("error", 4.0, 0.0), ("slow", 8.0, 2.0)],
    ids=["http-500-for-4s", "slow-2s-per-call-for-8s"],
)
def test_worker_http_500_or_slow(
    stack: FaultStack, mode: str, seconds: float, delay: float
) -> None:
    before = job_health(stack.runtime)
    jobs = mixed(2, 150, 3, 8, 0.02, f"w{mode}")
    stack.worker.set_fault(mode, seconds, delay)
    started = time.monotonic()
    submit_all(stack.client, jobs)
    outcome = collect(jobs, timeout=240)
    elapsed = time.monotonic() - started
    hits = stack.worker.fault_hits()
    after = job_health(stack.runtime)
    what = "answers HTTP 500" if mode == "error" else f"is slow ({delay:g} s per call)"
    record_result(
        scenario=f"worker {what} for {seconds:g} s",
        pipelines=len(jobs),
        completed_correctly=outcome.completed_correctly,
        wrong=len(outcome.wrong),
        failed=len(outcome.failed),
        faulty_http_calls=hits,
        total_s=round(elapsed, 1),
        job_restarts=after.restarts - before.restarts,
    )
    assert hits > 0
    assert not outcome.failed and not outcome.wrong, (outcome.failed[:2], outcome.wrong[:2])
    assert after.jid == before.jid and after.state == "RUNNING"
    assert after.restarts == before.restarts
