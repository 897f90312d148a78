"""Scenario 1: the Python worker is SIGKILLed in the middle of a fan-out and started again.

StateFun retries the cut-off calls (with backoff, within the transport's call budget) until the
new worker answers. Task bodies may run again (at-least-once); pipeline state, results and
replies must not duplicate, and the Flink job must not restart.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import FaultStack, job_health, record_result
from tests.faults.workload import (
    collect,
    fan_out_runs,
    mixed,
    outcome_fields,
    run_again,
    submit_all,
)

pytestmark = [pytest.mark.integration]

FAN_OUTS, FAN_SIZE, CHAINS, CHAIN_LENGTH, DELAY = 4, 250, 6, 12, 0.05


def test_worker_sigkill_mid_fan_out(stack: FaultStack) -> None:
    before = job_health(stack.runtime)
    reader = stack.reply_reader()
    try:
        jobs = mixed(FAN_OUTS, FAN_SIZE, CHAINS, CHAIN_LENGTH, DELAY, "wk")
        fan_tags = {j.id.split("-")[1] for j in jobs if j.kind == "fan-out"}
        started = time.monotonic()
        submit_all(stack.client, jobs)
        # kill once roughly a third of the fan-out tasks have run
        target = FAN_OUTS * FAN_SIZE // 3
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ran = sum(
                n
                for k, n in stack.worker.executions("square").items()
                if k.split(":")[0] in fan_tags
            )
            if ran >= target:
                break
            time.sleep(0.05)
        ran_before_kill = ran
        pid = stack.worker.pid
        stack.worker.kill()
        killed_at = time.monotonic()
        time.sleep(3.0)  # the outage
        stack.worker.start()
        restarted_at = time.monotonic()
        outcome = collect(jobs, timeout=240)
        done_at = time.monotonic()
        replies = reader.wait_for([j.id for j in jobs], timeout=30)
    finally:
        reader.close()
    after = job_health(stack.runtime)

    runs = stack.worker.executions("square")
    fan_runs = fan_out_runs(runs, fan_tags)
    record_result(
        scenario="worker SIGKILL mid fan-out, restarted after 3 s",
        tasks=FAN_OUTS * (FAN_SIZE + 1) + CHAINS * (CHAIN_LENGTH + 1),
        **outcome_fields(jobs, outcome, replies.by_pipeline),
        task_bodies_run_again=run_again(fan_runs),
        fan_out_tasks_run_before_kill=ran_before_kill,
        killed_pid=pid,
        recovery_s=round(done_at - killed_at, 1),
        after_restart_s=round(done_at - restarted_at, 1),
        total_s=round(done_at - started, 1),
        job_restarts=after.restarts - before.restarts,
    )
    assert not outcome.failed, outcome.failed[:3]
    assert not outcome.wrong, outcome.wrong[:3]
    assert outcome.completed_correctly == len(jobs)
    # every pipeline answered exactly once on the reply topic
    assert all(replies.by_pipeline[j.id] == 1 for j in jobs), replies.by_pipeline
    # every fan-out task body ran at least once (at-least-once; more is allowed)
    assert len(fan_runs) == FAN_OUTS * FAN_SIZE
    assert after.state == "RUNNING"
    assert after.jid == before.jid
    assert after.restarts == before.restarts
