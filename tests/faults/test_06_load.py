"""Scenario 6: load. 100 concurrent pipelines of 1,000 tasks each (100,000 tasks) complete
correctly on the shared fault runtime (one worker process, StateFun parallelism 1)."""

from __future__ import annotations

import time

import pytest

from flink_tasks import in_parallel
from tests.faults import fault_tasks as ft
from tests.faults.harness import FaultStack, job_health, record_result
from tests.faults.workload import Job, collect, submit_all

# the scenario waits up to 600 s itself; its throughput is a benchmark figure, not asserted here
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

PIPELINES, TASKS = 100, 1000


def test_100_concurrent_pipelines_of_1000_tasks(stack: FaultStack) -> None:
    before = job_health(stack.runtime)
    jobs = []
    for k in range(PIPELINES):
        pipeline = in_parallel([ft.ident.send(k * TASKS + i) for i in range(TASKS)]).continue_with(
            ft.count
        )
        base = k * TASKS
        jobs.append(Job(pipeline, [TASKS, sum(range(base, base + TASKS))], "load"))
    started = time.monotonic()
    submit_all(stack.client, jobs, timeout=600)
    outcome = collect(jobs, timeout=600)
    elapsed = time.monotonic() - started
    after = job_health(stack.runtime)
    record_result(
        scenario=f"load: {PIPELINES} concurrent pipelines x {TASKS} tasks",
        pipelines=PIPELINES,
        tasks=PIPELINES * (TASKS + 1),
        completed_correctly=outcome.completed_correctly,
        wrong=len(outcome.wrong),
        failed=len(outcome.failed),
        total_s=round(elapsed, 1),
        tasks_per_s=round(PIPELINES * TASKS / elapsed),
        job_restarts=after.restarts - before.restarts,
    )
    assert not outcome.failed, outcome.failed[:3]
    assert not outcome.wrong, outcome.wrong[:1]
    assert outcome.completed_correctly == PIPELINES
    assert after.restarts == before.restarts
