"""Rescale and upgrade with pipelines in flight, as a user does it: fan-outs running at
parallelism 2 on two TaskManagers; the worker is replaced by its next version (stopped, the new
code started on the same port) and ``flink-tasks local rescale --parallelism 3 --taskmanagers 3``
stops the job with a savepoint and starts it from there on three TaskManagers. Every pipeline
completes with its exact result, one final reply each, and the new worker code serves.

It leaves the shared cluster at parallelism 3, so it runs last (modules run in name order);
the package fixture stops whatever the run dir records, a third TaskManager included.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from flink_tasks.runtime import LocalRuntime
from flink_tasks.runtime.configs import MAX_PARALLELISM
from flink_tasks.runtime.workers import WorkerProcesses
from tests.cluster.cluster_tasks import expected_sum_of_squares, sum_of_squares
from tests.cluster.cluster_tasks_v2 import WORKER_VERSION, worker_version
from tests.cluster.conftest import ROOT, serve
from tests.cluster.helpers import (
    client_for,
    final_replies,
    functions_vertex,
    records_in,
    subtask_placement,
)
from tests.faults.harness import ReplyReader, rest_get

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def local_cli(cluster: LocalRuntime, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flink_tasks", "local", *args, "--run-dir", str(cluster.run_dir)],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


async def test_rescale_2_to_3_and_a_new_worker_with_pipelines_in_flight(
    cluster: LocalRuntime, cluster_worker: WorkerProcesses
) -> None:
    assert sorted(subtask_placement(cluster).values()) == ["taskmanager-1", "taskmanager-2"]
    pipelines = [sum_of_squares(40, offset=1000 * k, max_parallelism=2) for k in range(6)]
    expected = {p.id: expected_sum_of_squares(40, offset=1000 * k) for k, p in enumerate(pipelines)}
    assert cluster.settings.replies_partitions == 1  # what final_replies relies on
    reader = ReplyReader(
        cluster.bootstrap_servers, cluster.settings.replies_topic, read_committed=True
    )
    client = client_for(cluster)
    new_worker = serve(cluster.settings, "tests.cluster.cluster_tasks_v2:tasks")
    try:
        await client.wait_ready_async()
        start = records_in(cluster)
        submitted = [asyncio.ensure_future(client.submit_async(p)) for p in pipelines]
        deadline = time.monotonic() + 120
        while True:  # the fan-outs are flowing through both TaskManagers
            now = records_in(cluster)
            if all(now[i] - start.get(i, 0) >= 20 for i in now):
                break
            assert time.monotonic() < deadline, f"fan-outs did not start: {now} vs {start}"
            await asyncio.sleep(0.2)
        # the new worker version: stopped and started on the same port (StateFun retries the
        # calls meanwhile), as a rolling update of a one-replica worker Deployment does
        await asyncio.to_thread(cluster_worker.stop)
        await asyncio.to_thread(new_worker.start)
        done_at_rescale = sum(1 for f in submitted if f.done())
        savepoint = await asyncio.to_thread(local_cli, cluster, "savepoint")
        assert savepoint.returncode == 0, savepoint.stderr
        rescaled = await asyncio.to_thread(
            local_cli, cluster, "rescale", "--parallelism", "3", "--taskmanagers", "3"
        )
        assert rescaled.returncode == 0, rescaled.stdout + rescaled.stderr
        results = await asyncio.gather(*submitted)
        assert await client.submit_async(worker_version.send()) == WORKER_VERSION
        finals = await final_replies(client, reader, list(expected))
    finally:
        await client.aclose()
        reader.close()
        await asyncio.to_thread(new_worker.stop)
    print(f"{done_at_rescale}/6 pipelines done at the rescale; {rescaled.stdout.strip()}")
    assert done_at_rescale < len(pipelines)
    assert "parallelism 2 -> 3 on 3 TaskManagers" in rescaled.stdout, rescaled.stdout
    assert dict(zip(expected, results, strict=True)) == expected
    assert finals == dict.fromkeys(expected, 1)
    # the job runs at 3, one subtask per TaskManager, within the max parallelism set up front
    assert sorted(subtask_placement(cluster).values()) == [
        "taskmanager-1",
        "taskmanager-2",
        "taskmanager-3",
    ]
    jid, vid = functions_vertex(cluster)
    vertex = rest_get(cluster, f"/jobs/{jid}/vertices/{vid}")
    assert (vertex["parallelism"], vertex["maxParallelism"]) == (3, MAX_PARALLELISM)
    recorded = LocalRuntime.attach(cluster.settings).settings
    assert (recorded.parallelism, recorded.taskmanagers) == (3, 3)
