"""The StateFun JVM frozen with SIGSTOP for 60 s mid-workload (a paused VM, a stop-the-world
stall), longer than Flink's 50 s heartbeat timeout, with more pipelines submitted meanwhile.

Resumed, the job fails over by itself if it must (its TaskManager's heartbeat timed out while
frozen) and every pipeline completes once with its result (exactly-once egress, raw
``read_committed`` reader); the same job is RUNNING afterwards.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.faults.harness import FaultStack, fault_stack, job_health, record_result
from tests.faults.workload import collect, fan_out_runs, mixed, submit_all
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FROZEN_S = 60.0


@pytest.fixture(scope="module")
def frozen_jvm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with fault_stack(
        tmp_path_factory.mktemp("faults-frozen-jvm"),
        62100,
        serve_workers=2,
        delivery_semantic="exactly-once",
    ) as s:
        yield s


def test_a_frozen_statefun_jvm_heals_by_itself(frozen_jvm: FaultStack) -> None:
    stack = frozen_jvm
    before = job_health(stack.runtime)
    reader = stack.reply_reader()
    try:
        jobs = mixed(2, 100, 3, 8, 0.05, "jf")
        fan_tags = {j.id.split("-")[1] for j in jobs if j.kind == "fan-out"}
        submit_all(stack.client, jobs)
        wait_until(
            lambda: fan_out_runs(stack.worker.executions("square"), fan_tags),
            120,
            "the fan-outs to start",
        )
        jvm = stack.runtime.statefun.process.pid
        assert jvm is not None
        os.kill(jvm, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            late = mixed(1, 20, 1, 3, 0.0, "jfl")  # submitted while the job cannot run
            submit_all(stack.client, late)
            jobs += late
            time.sleep(max(0.0, FROZEN_S - (time.monotonic() - frozen_at)))  # the fault's length
        finally:
            os.kill(jvm, signal.SIGCONT)
        resumed_at = time.monotonic()
        outcome = collect(jobs, timeout=300)
        done_s = time.monotonic() - resumed_at
        replies = reader.wait_for([j.id for j in jobs], timeout=60)
    finally:
        reader.close()
    after = job_health(stack.runtime)
    record_result(
        scenario=f"StateFun JVM SIGSTOPped {FROZEN_S:g} s mid-workload (exactly-once egress)",
        pipelines=len(jobs),
        completed_correctly=outcome.completed_correctly,
        replies_per_pipeline=sorted({replies.by_pipeline[j.id] for j in jobs}),
        all_done_after_resume_s=round(done_s, 1),
        root_exception=(after.root_exception or "").split("\n", 1)[0][:160],
    )
    assert not outcome.failed, outcome.failed[:3]
    assert not outcome.wrong, outcome.wrong[:3]
    assert outcome.completed_correctly == len(jobs)
    assert all(replies.by_pipeline[j.id] == 1 for j in jobs), replies.by_pipeline
    assert (after.jid, after.state) == (before.jid, "RUNNING")
