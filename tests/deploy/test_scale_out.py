"""Scale-out on one machine, for real: StateFun at parallelism 2 and two worker processes behind
one port (`flink-tasks serve --workers 2`, SO_REUSEPORT); a fan-out must reach both workers.

The pipeline function's state lives in Flink and travels with every request, so any worker
process may serve any address: the results are right whichever process ran what.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest

from flink_tasks import in_parallel
from flink_tasks.runtime import LocalRuntime
from flink_tasks.runtime.workers import WorkerProcesses
from tests.deploy._ports import isolated_settings
from tests.deploy.scaleout_tasks import whoami

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="--workers > 1 needs SO_REUSEPORT (Linux)"),
]


@pytest.mark.timeout(900)
async def test_fan_out_runs_on_every_worker_process(tmp_path: Path) -> None:
    from flink_tasks_client import FlinkTasksClient

    settings = isolated_settings(
        tmp_path / "runtime", parallelism=2, call_timeout=timedelta(minutes=2)
    )
    worker = settings.worker_port
    logs = tmp_path / "runtime" / "logs"
    logs.mkdir(parents=True)
    workers = WorkerProcesses(
        "tests.deploy.scaleout_tasks:tasks",
        port=worker,
        workers=2,
        log_file=logs / "workers.log",
        cwd=ROOT,
    )
    # the workers first: StateFun's first call to each function blocks until it answers
    with workers:
        worker_pids = workers.worker_pids()
        assert len(worker_pids) == 2
        with LocalRuntime(settings) as runtime:
            job = runtime.job_status()
            assert job is not None and job.ready
            client = FlinkTasksClient(
                bootstrap_servers=settings.bootstrap_servers,
                request_topic=settings.requests_topic,
                action_topic=settings.actions_topic,
                reply_topic=settings.replies_topic,
                events_topic=settings.events_topic,
                default_timeout=timedelta(minutes=3),
            )
            seen: set[int] = set()
            try:
                await client.wait_ready_async()
                # connections are pooled: a later round opens new ones if the first missed a worker
                for _ in range(3):
                    pids = await client.submit_async(
                        in_parallel([whoami.send(i) for i in range(40)])
                    )
                    assert len(pids) == 40
                    seen |= set(pids)
                    if seen >= worker_pids:
                        break
            finally:
                await client.aclose()
            print(f"job {job.jid}: {job.tasks_total} tasks; workers {sorted(worker_pids)}")
        assert seen == worker_pids, (
            f"tasks ran on {sorted(seen)}, workers are {sorted(worker_pids)}"
        )
