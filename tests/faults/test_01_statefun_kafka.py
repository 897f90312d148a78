"""Scenarios 2 and 3, on a runtime of their own with the exactly-once egress (replies are read
`read_committed`, as the client does when the egress is exactly-once):

2. the StateFun JVM is SIGKILLed and started again from the newest retained checkpoint: every
   in-flight pipeline completes correctly and the reply topic holds exactly one committed reply
   per pipeline;
3. the Kafka broker is SIGKILLed and started again on the same data: pipelines accepted before
   the outage complete; submissions made during it either complete after it or fail with a clear
   `TransportError`; nothing accepted is lost.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import wait
from datetime import timedelta

import pytest

from flink_tasks.errors import TransportError
from flink_tasks.runtime.process import pid_alive
from tests.faults.harness import FaultStack, job_health, record_result
from tests.faults.workload import (
    collect,
    fan_out,
    fan_out_runs,
    mixed,
    outcome_fields,
    run_again,
    submit_all,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAN_OUTS, FAN_SIZE, CHAINS, CHAIN_LENGTH, DELAY = 3, 300, 5, 12, 0.05


def _wait_progress(stack: FaultStack, tags: set[str], target: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    ran = 0
    while time.monotonic() < deadline:
        ran = sum(
            n for k, n in stack.worker.executions("square").items() if k.split(":")[0] in tags
        )
        if ran >= target:
            break
        time.sleep(0.05)
    return ran


def _kill_by_pid(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid)


def test_statefun_sigkill_and_restore_from_checkpoint(eo_stack: FaultStack) -> None:
    stack = eo_stack
    reader = stack.reply_reader()
    try:
        jobs = mixed(FAN_OUTS, FAN_SIZE, CHAINS, CHAIN_LENGTH, DELAY, "sf")
        tags = {j.id.split("-")[1] for j in jobs if j.kind == "fan-out"}
        started = time.monotonic()
        submit_all(stack.client, jobs)
        ran_before_kill = _wait_progress(stack, tags, FAN_OUTS * FAN_SIZE // 3)
        stack.runtime.wait_for_checkpoint()  # a checkpoint taken while the fan-outs run
        pid = stack.runtime.statefun.process.pid
        assert pid is not None
        _kill_by_pid(pid)
        killed_at = time.monotonic()
        ready_s = stack.runtime.restart_statefun(from_checkpoint=True)
        outcome = collect(jobs, timeout=300)
        done_at = time.monotonic()
        replies = reader.wait_for([j.id for j in jobs], timeout=30)
        for _ in range(2):  # two more checkpoints: a late duplicate would be committed by now
            stack.runtime.wait_for_checkpoint()
        replies = reader.snapshot()
    finally:
        reader.close()
    health = job_health(stack.runtime)
    restored = "Restoring job" in stack.settings.statefun_log_file.read_text(errors="replace")
    runs = stack.worker.executions("square")
    fan_runs = fan_out_runs(runs, tags)
    record_result(
        scenario="StateFun JVM SIGKILL, restored from the last retained checkpoint (exactly-once)",
        tasks=FAN_OUTS * (FAN_SIZE + 1) + CHAINS * (CHAIN_LENGTH + 1),
        **outcome_fields(jobs, outcome, replies.by_pipeline),
        replies_per_pipeline=sorted(set(replies.by_pipeline[j.id] for j in jobs)),
        task_bodies_run_again=run_again(fan_runs),
        fan_out_tasks_run_before_kill=ran_before_kill,
        killed_pid=pid,
        jvm_ready_after_restore_s=round(ready_s, 1),
        recovery_s=round(done_at - killed_at, 1),
        total_s=round(done_at - started, 1),
    )
    assert restored
    assert not outcome.failed, outcome.failed[:3]
    assert not outcome.wrong, outcome.wrong[:3]
    assert all(replies.by_pipeline[j.id] == 1 for j in jobs), dict(replies.by_pipeline)
    assert len(fan_runs) == FAN_OUTS * FAN_SIZE
    assert health.state == "RUNNING"


def test_kafka_sigkill_and_restart(eo_stack: FaultStack) -> None:
    stack = eo_stack
    patient = stack.new_client(send_timeout=timedelta(minutes=3))
    impatient = stack.new_client(send_timeout=timedelta(seconds=2))
    try:
        accepted = mixed(2, 200, 3, 10, DELAY, "ka")
        submit_all(stack.client, accepted)
        # accepted: Kafka acknowledged them (they are running)
        tags = {j.id.split("-")[1] for j in accepted if j.kind == "fan-out"}
        _wait_progress(stack, tags, 50)
        pid = stack.runtime.kafka.process.pid
        assert pid is not None
        _kill_by_pid(pid)
        killed_at = time.monotonic()
        during_patient = [fan_out(100, 0.0, f"kp{k}") for k in range(3)]
        submit_all(patient, during_patient)
        during_impatient = [fan_out(100, 0.0, f"ki{k}") for k in range(3)]
        submit_all(impatient, during_impatient)
        # the impatient ones fail clearly while the broker is down
        wait([j.future for j in during_impatient if j.future], timeout=30)
        time.sleep(2)
        ready_s = stack.runtime.restart_kafka()
        restarted_at = time.monotonic()
        outcome_accepted = collect(accepted, timeout=300)
        outcome_patient = collect(during_patient, timeout=300)
        outcome_impatient = collect(during_impatient, timeout=60)
        done_at = time.monotonic()
        # and new work runs as usual afterwards
        after = fan_out(50, 0.0, "kafter")
        submit_all(stack.client, [after])
        outcome_after = collect([after], timeout=120)
    finally:
        patient.close()
        impatient.close()
    health = job_health(stack.runtime)
    impatient_errors = [e for _, e in outcome_impatient.failed]
    record_result(
        scenario="Kafka broker SIGKILL, restarted on the same data",
        pipelines=len(accepted) + len(during_patient) + len(during_impatient) + 1,
        accepted_before_completed_correctly=f"{outcome_accepted.completed_correctly}/{len(accepted)}",
        submitted_during_outage_completed=f"{outcome_patient.completed_correctly}/{len(during_patient)}",
        submitted_during_outage_short_send_timeout_failed_clearly=(
            f"{sum(isinstance(e, TransportError) for e in impatient_errors)}"
            f"/{len(during_impatient)}"
        ),
        wrong=len(outcome_accepted.wrong) + len(outcome_patient.wrong),
        kafka_ready_s=round(ready_s, 1),
        recovery_s=round(done_at - killed_at, 1),
        after_restart_s=round(done_at - restarted_at, 1),
        job_restarts_during_outage=health.restarts,
    )
    assert outcome_accepted.completed_correctly == len(accepted), outcome_accepted
    assert outcome_patient.completed_correctly == len(during_patient), outcome_patient
    # either completed after the outage, or failed with a clear transport error
    for error in impatient_errors:
        assert isinstance(error, TransportError), repr(error)
        assert "Kafka did not" in str(error)
    assert outcome_impatient.completed_correctly + len(impatient_errors) == len(during_impatient)
    assert not outcome_impatient.wrong
    assert outcome_after.completed_correctly == 1
    assert health.state == "RUNNING"
