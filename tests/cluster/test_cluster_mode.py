"""Cluster mode of the local runtime: a JobManager and two TaskManagers, each its own JVM, the
StateFun job at parallelism 2 with the exactly-once egress; the worker in its own process.

- fan-outs run on both TaskManagers (the functions operator's subtasks, one per TaskManager,
  both receive the fan-outs' messages: Flink's per-subtask ``numRecordsIn``);
- SIGKILL of one TaskManager's JVM in the middle of a fan-out: the job fails over, the JVM is
  started again by itself (as Kubernetes restarts a pod's container: each TaskManager has one
  slot, the job needs both), the job restores its checkpoint and every pipeline completes
  exactly once (exact results, one final reply each on the reply topic). The surviving
  TaskManager may end itself too (a StateFun task cancelled mid-checkpoint never finishes
  cancelling; Flink ends its JVM after task.cancellation.timeout) and is started again the same
  way: before keep_running, that left the job without slots for good.
- SIGSTOP of one TaskManager's JVM (a paused node) past the heartbeat timeout, then SIGCONT:
  the same outcome once it is resumed (while it stays frozen the job waits for its slot).
- SIGKILL of the JobManager (no HA, as compose): the job ends; `local up` starts a JobManager
  that restores the newest retained checkpoint, the running TaskManagers register with it, and
  every pipeline completes exactly once.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from typing import Any

import pytest

from flink_tasks.runtime import LocalRuntime
from tests.cluster.cluster_tasks import expected_sum_of_squares, sum_of_squares
from tests.cluster.helpers import client_for, final_replies, records_in, subtask_placement
from tests.faults.harness import ReplyReader, job_health

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

#: fan-outs submitted at once: one pipeline's 8 bucket keys all land on one subtask 1 time in 128
FAN_OUTS = 3

KILL = {"killed": signal.SIGKILL, "frozen": signal.SIGSTOP}


async def test_a_fan_out_spans_both_taskmanagers(cluster: LocalRuntime) -> None:
    placement = subtask_placement(cluster)
    assert sorted(placement.values()) == ["taskmanager-1", "taskmanager-2"], placement
    before = records_in(cluster)
    client = client_for(cluster)
    try:
        await client.wait_ready_async()
        results = await asyncio.gather(
            *(client.submit_async(sum_of_squares(40, offset=k)) for k in range(FAN_OUTS))
        )
    finally:
        await client.aclose()
    assert results == [expected_sum_of_squares(40, offset=k) for k in range(FAN_OUTS)]
    deadline = time.monotonic() + 120  # metrics are sampled every few seconds
    while True:
        after = records_in(cluster)
        grown = {i: after[i] - before.get(i, 0) for i in after}
        if all(n >= 3 for n in grown.values()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    print(f"fan-out messages per subtask: {grown}, placement {placement}")
    # a fan-out's task messages go to its 8 task buckets (`{pipeline}#b0..7`, packed): with
    # 3 fan-outs 24 keys and their pipelines', spread over both subtasks, both TaskManagers
    assert set(grown) == {0, 1} and all(n >= 3 for n in grown.values()), grown


class FanOuts:
    """6 fan-outs of 40 calls, 2 at a time (each runs for several seconds), submitted through a
    client, and a reader of the committed replies (exactly-once: one final reply each)."""

    def __init__(self, cluster: LocalRuntime) -> None:
        assert cluster.settings.replies_partitions == 1  # what final_replies relies on
        self.cluster = cluster
        pipelines = [sum_of_squares(40, offset=100 * k, max_parallelism=2) for k in range(6)]
        self.expected = {
            p.id: expected_sum_of_squares(40, offset=100 * k) for k, p in enumerate(pipelines)
        }
        self.pipelines = pipelines
        self.reader = ReplyReader(
            cluster.bootstrap_servers, cluster.settings.replies_topic, read_committed=True
        )
        self.client = client_for(cluster)
        self.submitted: list[asyncio.Future[Any]] = []

    async def start_flowing(self) -> int:
        """Submits them and returns once both TaskManagers run their calls; returns how many
        pipelines were done by then."""
        await self.client.wait_ready_async()
        start = records_in(self.cluster)
        self.submitted = [
            asyncio.ensure_future(self.client.submit_async(p)) for p in self.pipelines
        ]
        deadline = time.monotonic() + 120
        while True:
            now = records_in(self.cluster)
            if all(now[i] - start.get(i, 0) >= 20 for i in now):
                return sum(1 for f in self.submitted if f.done())
            assert time.monotonic() < deadline, f"fan-outs did not start: {now} vs {start}"
            await asyncio.sleep(0.2)

    async def outcome(self) -> tuple[dict[str, Any], dict[str, int]]:
        """Every pipeline's result, and the final replies committed per pipeline."""
        results = await asyncio.gather(*self.submitted)
        finals = await final_replies(self.client, self.reader, list(self.expected))
        return dict(zip(self.expected, results, strict=True)), finals

    async def close(self) -> None:
        await self.client.aclose()
        self.reader.close()


@pytest.mark.parametrize("fault", ["killed", "frozen"])
async def test_taskmanager_lost_mid_fan_out_every_pipeline_completes_once(
    cluster: LocalRuntime, fault: str
) -> None:
    before = job_health(cluster)
    victim = 2
    assert f"taskmanager-{victim}" in subtask_placement(cluster).values()
    fan_outs = FanOuts(cluster)
    try:
        done_at_kill = await fan_outs.start_flowing()
        killed_at = time.monotonic()
        # killed: the JVM starts again by itself, as a pod's container does; frozen (a node or
        # VM paused): it keeps its sockets and answers nothing until it thaws
        jvms = cluster.kill_taskmanager(victim, KILL[fault])
        assert jvms
        # the JobManager notices the loss (a refused connection, or the heartbeat timeout) and
        # fails the job over: a new root exception (numRestarts lags, and while a TaskManager
        # is frozen the REST API may not update it at all)
        while job_health(cluster).root_exception == before.root_exception:
            assert time.monotonic() - killed_at < 120, "the TaskManager's loss went unnoticed"
            await asyncio.sleep(0.5)
        noticed_after = time.monotonic() - killed_at
        if fault == "frozen":
            for pid in jvms:
                os.kill(pid, signal.SIGCONT)
        results, finals = await fan_outs.outcome()
        recovered_after = time.monotonic() - killed_at
    finally:
        await fan_outs.close()
    cluster.statefun.wait_ready(120, wait_for_checkpoint=False)
    deadline = time.monotonic() + 60  # numRestarts lags the failover
    while (after := job_health(cluster)).restarts == before.restarts:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    print(
        f"{fault} taskmanager-{victim} with {done_at_kill}/6 pipelines done; loss noticed after "
        f"{noticed_after:.1f}s; all done {recovered_after:.1f}s after the kill; restarts "
        f"{before.restarts} -> {after.restarts}; TaskManager JVM exits {jvm_exits(cluster)}"
    )
    assert done_at_kill < len(fan_outs.pipelines)
    assert results == fan_outs.expected
    assert finals == dict.fromkeys(fan_outs.expected, 1)
    assert after.jid == before.jid and after.state == "RUNNING"
    assert after.restarts >= before.restarts + 1
    assert sorted(subtask_placement(cluster).values()) == ["taskmanager-1", "taskmanager-2"]


async def test_jobmanager_killed_mid_fan_out_and_started_again_every_pipeline_completes_once(
    cluster: LocalRuntime,
) -> None:
    """No HA (as compose): the JobManager's loss ends the job; `local up` (what compose's
    restart with deploy/compose/jobmanager-entrypoint.sh does) starts a new one from the newest
    retained checkpoint, and the TaskManagers, still running, register with it."""
    before = job_health(cluster)
    jobmanager = cluster.statefun.process.pid
    assert jobmanager is not None
    fan_outs = FanOuts(cluster)
    try:
        done_at_kill = await fan_outs.start_flowing()
        killed_at = time.monotonic()
        os.kill(jobmanager, signal.SIGKILL)
        while cluster.statefun.process.is_running():
            assert time.monotonic() - killed_at < 30, "the JobManager is still there"
            await asyncio.sleep(0.2)
        # `flink-tasks local up`: Kafka and the TaskManagers are reused, the JobManager started
        again = LocalRuntime(cluster.settings.replace(restore_from_checkpoint=True))
        await asyncio.to_thread(again.start)
        assert again.started == {"statefun"} and "kafka" in again.reused
        results, finals = await fan_outs.outcome()
        recovered_after = time.monotonic() - killed_at
    finally:
        await fan_outs.close()
    after = job_health(cluster)
    log = cluster.settings.statefun_log_file.read_text(errors="replace")
    print(
        f"killed the JobManager with {done_at_kill}/6 pipelines done; all done "
        f"{recovered_after:.1f}s after the kill; TaskManager JVM exits {jvm_exits(cluster)}"
    )
    assert done_at_kill < len(fan_outs.pipelines)
    # restored from the newest retained checkpoint (Flink calls a restore path a savepoint)
    assert re.search(
        rf"Restoring job {after.jid} from Savepoint \d+ .* located at \S+/chk-\d+", log
    )
    assert results == fan_outs.expected
    assert finals == dict.fromkeys(fan_outs.expected, 1)
    assert after.jid != before.jid and after.state == "RUNNING"
    assert sorted(subtask_placement(cluster).values()) == ["taskmanager-1", "taskmanager-2"]


def jvm_exits(cluster: LocalRuntime) -> dict[str, int]:
    """TaskManager JVMs that ended and were started again by keep_running, per TaskManager (a
    surviving one whose task was stuck cancelling ends itself)."""
    return {
        log.stem: log.read_text(errors="replace").count("flink-tasks: the process exited")
        for log in cluster.statefun.taskmanagers.log_files()
    }
