"""Scenario 8: task execution isolated from the HTTP endpoint. The worker runs as users run it
(``python -m flink_tasks serve tests.faults.isolation_tasks:tasks --workers 2 --pool process``,
its own process), StateFun's call budget is 20 s. A task that calls ``os._exit``, segfaults, goes
over its memory limit, hangs (20 of them), or blocks its async event loop past the call budget
fails alone, with a clear `TaskError`; the Flink job neither fails nor restarts (same job id,
`numRestarts` unchanged), exactly one reply arrives per pipeline, and other pipelines complete."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from datetime import timedelta
from typing import Any

import pytest

from flink_tasks import PipelineBuilder, TaskError
from tests.faults import isolation_tasks as it
from tests.faults.harness import FaultStack, fault_stack, job_health, record_result
from tests.faults.workload import Job, chain, collect, fan_out, submit_all

pytestmark = [pytest.mark.integration]

CALL_BUDGET = timedelta(seconds=20)


@pytest.fixture(scope="module")
def iso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with fault_stack(
        tmp_path_factory.mktemp("faults-isolation"),
        62300,
        serve_workers=2,
        serve_target="tests.faults.isolation_tasks:tasks",
        serve_args=("--pool", "process"),
        call_timeout=CALL_BUDGET,
    ) as s:
        yield s


def others(tag: str) -> list[Job]:
    """Pipelines that run alongside a fault: a 60-task fan-out (async tasks + a sync total in
    the process pool) and a 6-step stateful chain."""
    return [fan_out(60, 0.0, tag), chain(6, 0.0, tag)]


def expect_task_error(future: Future[Any], timeout: float = 90.0) -> TaskError:
    with pytest.raises(TaskError) as caught:
        future.result(timeout=timeout)
    return caught.value


def check(
    stack: FaultStack,
    scenario: str,
    failing: list[tuple[PipelineBuilder, str, str]],
    alongside: list[Job],
    *,
    then: Sequence[tuple[PipelineBuilder, Any]] = (),
) -> float:
    """Submit `failing` (pipeline, exception_type, message part) and `alongside`, then `then`
    (pipeline, expected result); assert outcomes, one reply each and a job that never restarted."""
    client = stack.client
    before = job_health(stack.runtime)
    reader = stack.reply_reader()
    try:
        started = time.monotonic()
        bad = [(client.submit(p, timeout=120), p, kind, part) for p, kind, part in failing]
        submit_all(client, alongside, timeout=120)
        errors_at = []
        for future, _p, kind, part in bad:
            error = expect_task_error(future)
            errors_at.append(time.monotonic() - started)
            assert error.exception_type == kind, error
            assert part in error.exception_message, error.exception_message
        later_started = time.monotonic()
        later = [(client.submit(p, timeout=120), expected) for p, expected in then]
        for future, expected in later:
            assert future.result(timeout=120) == expected
        later_s = time.monotonic() - later_started
        outcome = collect(alongside, timeout=120)
        ids = [p.id for _f, p, _k, _m in bad] + [j.id for j in alongside] + [p.id for p, _ in then]
        replies = reader.wait_for(ids, timeout=30)
        time.sleep(1)  # a duplicate would arrive right behind the first reply
        replies = reader.snapshot()
    finally:
        reader.close()
    after = job_health(stack.runtime)
    record_result(
        scenario=scenario,
        pipelines=len(ids),
        time_to_task_error_s=[round(t, 2) for t in errors_at],
        then_s=round(later_s, 2) if then else None,
        others_completed=outcome.completed_correctly,
        duplicate_replies=sum(max(0, replies.by_pipeline[i] - 1) for i in ids),
        job_restarts=after.restarts - before.restarts,
    )
    assert not outcome.failed and not outcome.wrong, (outcome.failed[:2], outcome.wrong[:2])
    assert outcome.completed_correctly == len(alongside)
    assert {i: replies.by_pipeline[i] for i in ids} == dict.fromkeys(ids, 1)
    assert after.jid == before.jid and after.state == "RUNNING"
    assert after.restarts == before.restarts
    return started


def test_os_exit_in_a_task(iso: FaultStack) -> None:
    check(
        iso,
        "task calls os._exit(3) (process pool)",
        [(it.exit_hard.send(3), "flink_tasks.WorkerLostError", "exited with code 3")],
        others("exit"),
        then=[(it.exit_on_first_attempt.send(4), 40), (it.plain.send(1), 2)],
    )


def test_segfault_in_a_task(iso: FaultStack) -> None:
    check(
        iso,
        "task segfaults (ctypes.string_at(0), process pool)",
        [(it.segfault.send(), "flink_tasks.WorkerLostError", "killed by signal SIGSEGV")],
        others("segv"),
        then=[(it.plain.send(2), 3)],
    )


def test_task_over_its_memory_limit(iso: FaultStack) -> None:
    check(
        iso,
        "task allocates 600 MiB with max_memory=200MiB (process pool)",
        [(it.hog.send(600), "flink_tasks.MemoryLimitError", "over its memory limit of 200 MiB")],
        others("mem"),
        then=[(it.plain.send(3), 4)],
    )


def test_many_hung_sync_tasks_then_an_ordinary_one(iso: FaultStack) -> None:
    hung = [
        (it.hang.send(600), "flink_tasks.TaskTimeoutError", "did not finish within 1 s")
        for _ in range(20)
    ]
    check(
        iso,
        "20 sync tasks hang (timeout 1 s), then an ordinary task (process pool)",
        hung,
        # an ordinary sync task submitted right behind them runs once a child is free
        [*others("hang"), Job(it.plain.send(40), 41, "plain")],
        then=[(it.plain.send(41), 42)],
    )


def test_async_task_blocking_its_loop_past_the_call_budget(iso: FaultStack) -> None:
    blocked_for = CALL_BUDGET.total_seconds() + 10
    before = job_health(iso.runtime)
    started = check(
        iso,
        f"async task blocks its event loop for {blocked_for:g} s (call budget 20 s)",
        [(it.block_loop.send(blocked_for), "flink_tasks.TaskTimeoutError", "within 2 s")],
        [],
        # submitted once the blocker has failed, while its loop is still blocked
        then=[(it.plain.send(5), 6)],
    )
    # async tasks and the pipeline function keep running while that loop is still blocked
    jobs = others("afterblock")
    submit_all(iso.client, jobs, timeout=120)
    outcome = collect(jobs, timeout=120)
    assert outcome.completed_correctly == len(jobs), (outcome.failed[:2], outcome.wrong[:2])
    # the blocked loop holds no StateFun call: once its sleep is over, still no restart
    while time.monotonic() < started + blocked_for + 2:
        time.sleep(0.5)
    after = job_health(iso.runtime)
    assert after.jid == before.jid and after.state == "RUNNING"
    assert after.restarts == before.restarts
