"""A worker outage three times longer than StateFun's call budget: the job heals itself.

The worker runs as users run it (`python -m flink_tasks serve ... --workers 2`, its own process
group). Mid-workload the whole worker (supervisor and both worker processes) is SIGKILLed and
stays down for 3 x the call budget. StateFun's calls run out of budget, the job fails and
restarts from its last checkpoint, again and again (exponential-delay restarts, no attempt
limit), and when a new `serve` comes up the same job is RUNNING again and finishes everything:
each pipeline, also those submitted during the outage, completes once with the right result
(exactly-once egress, raw `read_committed` reader).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from tests.faults.harness import (
    FaultStack,
    fault_stack,
    job_health,
    record_result,
    restart_strategy,
)
from tests.faults.workload import chain, collect, fan_out_runs, mixed, run_again, submit_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CALL_BUDGET = timedelta(seconds=10)
OUTAGE_S = 3 * CALL_BUDGET.total_seconds()
FAN_OUTS, FAN_SIZE, CHAINS, CHAIN_LENGTH, DELAY = 2, 150, 4, 10, 0.05


@pytest.fixture(scope="module")
def healing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    # the product's restart settings, except a short call budget so that the test is short
    with fault_stack(
        tmp_path_factory.mktemp("faults-outage"),
        61300,
        serve_workers=2,
        call_timeout=CALL_BUDGET,
        delivery_semantic="exactly-once",
    ) as s:
        yield s


def test_worker_outage_of_three_call_budgets(healing: FaultStack) -> None:
    stack = healing
    serve = stack.worker
    before = job_health(stack.runtime)
    assert before.state == "RUNNING"
    reader = stack.reply_reader()
    states: list[str] = []
    try:
        jobs = mixed(FAN_OUTS, FAN_SIZE, CHAINS, CHAIN_LENGTH, DELAY, "out")
        fan_tags = {j.id.split("-")[1] for j in jobs if j.kind == "fan-out"}
        submit_all(stack.client, jobs, timeout=400)
        # cut the worker off once about a third of the fan-out tasks ran
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ran = sum(
                n for k, n in serve.executions("square").items() if k.split(":")[0] in fan_tags
            )
            if ran >= FAN_OUTS * FAN_SIZE // 3:
                break
            time.sleep(0.05)
        killed = serve.kill()
        killed_at = time.monotonic()
        # more work arrives while no worker is there
        late = [chain(CHAIN_LENGTH, DELAY, f"late{k}") for k in range(2)]
        submit_all(stack.client, late, timeout=400)
        jobs += late
        # the outage: watch the job fail and restart while the worker is away
        while time.monotonic() - killed_at < OUTAGE_S:
            status = stack.runtime.job_status()
            states.append(status.state if status is not None else "NONE")
            time.sleep(0.5)
        serve.start()
        back_at = time.monotonic()
        outcome = collect(jobs, timeout=300)
        done_at = time.monotonic()
        replies = reader.wait_for([j.id for j in jobs], timeout=30)
    finally:
        reader.close()
    # numRestarts on Flink's REST API is refreshed every 10 s
    after = job_health(stack.runtime)
    deadline = time.monotonic() + 30
    while after.restarts <= before.restarts and time.monotonic() < deadline:
        time.sleep(1.0)
        after = job_health(stack.runtime)

    runs = serve.executions("square")
    fan_runs = fan_out_runs(runs, fan_tags)
    record_result(
        scenario=f"worker outage of {OUTAGE_S:g} s (3 x the {CALL_BUDGET.seconds} s call budget), "
        "serve --workers 2 SIGKILLed as a whole",
        pipelines=len(jobs),
        completed_correctly=outcome.completed_correctly,
        wrong=len(outcome.wrong),
        failed=len(outcome.failed),
        replies_per_pipeline=sorted(set(replies.by_pipeline[j.id] for j in jobs)),
        killed_pids=len(killed),
        job_states_during_outage=sorted(set(states)),
        job_restarts=after.restarts - before.restarts,
        recovery_after_worker_back_s=round(done_at - back_at, 1),
        recovery_after_kill_s=round(done_at - killed_at, 1),
        task_bodies_run_again=run_again(fan_runs),
    )
    assert not outcome.failed, outcome.failed[:3]
    assert not outcome.wrong, outcome.wrong[:3]
    assert outcome.completed_correctly == len(jobs)
    # exactly one committed reply per pipeline
    assert all(replies.by_pipeline[j.id] == 1 for j in jobs), replies.by_pipeline
    assert len(fan_runs) == FAN_OUTS * FAN_SIZE
    # the outage outlasted the call budget: the job failed and restarted, and never for good
    assert "RESTARTING" in states, states
    assert "FAILED" not in states, states
    assert after.jid == before.jid
    assert after.state == "RUNNING"
    assert after.restarts > before.restarts
    # no attempt limit: the strategy in effect is exponential-delay (it has none in Flink 1.16)
    assert restart_strategy(stack.runtime)["restart-strategy"] == "exponential-delay"
