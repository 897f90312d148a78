"""A worker process frozen with SIGSTOP in the middle of a workload (a paused container or VM, a
debugger, a process stuck in the kernel), under ``serve --workers 2`` as users run it.

A frozen process keeps its sockets open: StateFun's calls to it neither fail nor answer, so
each waits for the whole call budget and then fails the job, and the kernel keeps handing the
frozen process its share of new connections. The supervisor hears a heartbeat from each worker
process; one silent for ``--worker-timeout`` is SIGKILLed and started again, its connections
close, StateFun retries their calls on the other worker, and the job never restarts. A pause
shorter than the timeout costs nothing.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.faults.harness import (
    FaultStack,
    ServeProcess,
    fault_stack,
    job_health,
    record_result,
)
from tests.faults.workload import collect, fan_out_runs, mixed, run_again, submit_all
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration]

# a budget that a call stuck on the frozen worker would run out of well within the test
CALL_BUDGET = timedelta(seconds=20)
WORKER_TIMEOUT_S = 4
# tasks long enough that one seen starting is still running (so holding its call) when frozen
FAN_OUTS, FAN_SIZE, CHAINS, CHAIN_LENGTH, DELAY = 2, 200, 4, 10, 0.5


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with fault_stack(
        tmp_path_factory.mktemp("faults-frozen"),
        61900,
        serve_workers=2,
        serve_args=("--worker-timeout", f"{WORKER_TIMEOUT_S}s"),
        call_timeout=CALL_BUDGET,
    ) as s:
        yield s


def alive(pid: int) -> bool:
    """Running or stopped; not a zombie, not gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


def statefun_retries(stack: FaultStack) -> int:
    """Calls StateFun has retried so far (its log's "Retry #n" lines)."""
    return (stack.settings.run_dir / "logs" / "statefun.log").read_text().count("Retry #")


def a_body_starts(serve: ServeProcess) -> int:
    """The pid of the first worker process seen starting a task body (within one 50 ms poll)."""
    seen, starting = serve.runs_by_process(), []

    def started() -> bool:
        nonlocal seen
        now = serve.runs_by_process()
        starting[:] = [pid for pid in now if now[pid] > seen[pid]]
        seen = now
        return bool(starting)

    wait_until(started, 120, "a task body to start")
    return starting[0]


def test_a_frozen_worker_process_is_replaced_and_the_job_never_restarts(
    frozen: FaultStack,
) -> None:
    stack, serve = frozen, frozen.worker
    before = job_health(stack.runtime)
    reader = stack.reply_reader()
    try:
        jobs = mixed(FAN_OUTS, FAN_SIZE, CHAINS, CHAIN_LENGTH, DELAY, "fz")
        fan_tags = {j.id.split("-")[1] for j in jobs if j.kind == "fan-out"}
        submit_all(stack.client, jobs)
        # frozen for good the moment it starts a task body: it holds that task's call (a call of
        # its own until the body ends, a bucket's until the batch wait at the earliest)
        retries_before = statefun_retries(stack)
        first = a_body_starts(serve)
        os.kill(first, signal.SIGSTOP)
        frozen_at = time.monotonic()
        (second,) = set(serve.worker_pids()) - {first}
        # the other one paused for less than the timeout (a long GC pause, a debugger's breakpoint)
        os.kill(second, signal.SIGSTOP)
        time.sleep(1.0)  # the pause itself is the fault being injected
        os.kill(second, signal.SIGCONT)
        wait_until(lambda: not alive(first), 60, f"worker pid {first} is still there")
        replaced_after = time.monotonic() - frozen_at
        wait_until(lambda: len(serve.worker_pids()) == 2, 60, "no second worker again")
        outcome = collect(jobs, timeout=300)
        done_after = time.monotonic() - frozen_at
        replies = reader.wait_for([j.id for j in jobs], timeout=30)
    finally:
        reader.close()
    after = job_health(stack.runtime)
    retried = statefun_retries(stack) - retries_before
    log = serve.log_file.read_text()
    fan_runs = fan_out_runs(serve.executions("square"), fan_tags)
    record_result(
        scenario=f"a worker process of serve --workers 2 frozen (SIGSTOP) mid-workload, "
        f"--worker-timeout {WORKER_TIMEOUT_S}s, call budget {CALL_BUDGET.seconds} s",
        pipelines=len(jobs),
        completed_correctly=outcome.completed_correctly,
        replies_per_pipeline=sorted({replies.by_pipeline[j.id] for j in jobs}),
        replaced_after_s=round(replaced_after, 1),
        all_done_after_s=round(done_after, 1),
        calls_retried=retried,
        task_bodies_run_again=run_again(fan_runs),
        job_restarts=after.restarts - before.restarts,
    )
    assert not outcome.failed, outcome.failed[:3]
    assert not outcome.wrong, outcome.wrong[:3]
    assert outcome.completed_correctly == len(jobs)
    assert all(replies.by_pipeline[j.id] == 1 for j in jobs), replies.by_pipeline
    assert len(fan_runs) == FAN_OUTS * FAN_SIZE
    # the frozen one was killed and replaced; the one paused for a second was left alone
    assert first not in serve.worker_pids()
    assert second in serve.worker_pids()
    assert f"(pid {first}) sent no heartbeat for" in log, log[-3000:]
    assert f"(pid {second}) sent no heartbeat" not in log
    # the calls the frozen process held were retried elsewhere once it was killed, not failed
    # with the job
    assert retried >= 1
    assert (after.jid, after.state) == (before.jid, "RUNNING")
    # (numRestarts lags up to 10 s; a failure since the start would also be the root exception)
    assert after.restarts == before.restarts, after.root_exception
    assert after.root_exception == before.root_exception
