"""Worker pools by namespace on the real runtime: ``flink_tasks/*`` (the pipeline function and
the main tasks) at one ``serve`` process, ``io/*`` at another (``endpoints``: ``io=URL``), one
pipeline using both; every result says which pool ran it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from flink_tasks import in_parallel
from flink_tasks.runtime import LocalRuntime
from flink_tasks.runtime.workers import WorkerProcesses
from tests.deploy._ports import free_ports, isolated_settings
from tests.deploy.pool_tasks import double, store

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
async def test_one_pipeline_runs_on_two_worker_pools(tmp_path: Path) -> None:
    from flink_tasks_client import FlinkTasksClient

    (io_port,) = free_ports(1)
    io_url = f"http://127.0.0.1:{io_port}"
    settings = isolated_settings(
        tmp_path / "runtime", endpoints=(f"io={io_url}",), call_timeout=timedelta(minutes=2)
    )
    main_port = settings.worker_port
    logs = tmp_path / "runtime" / "logs"
    logs.mkdir(parents=True)
    env = {"FLINK_TASKS_BOOTSTRAP_SERVERS": settings.bootstrap_servers}
    # the main pool learns of the io namespace from FLINK_TASKS_ENDPOINTS (no --extra-namespace)
    main_pool = WorkerProcesses(
        "tests.deploy.pool_tasks:main_tasks",
        port=main_port,
        log_file=logs / "main-pool.log",
        cwd=ROOT,
        env={**env, "POOL_NAME": "main", "FLINK_TASKS_ENDPOINTS": f"io={io_url}"},
    )
    io_pool = WorkerProcesses(
        "tests.deploy.pool_tasks:io_tasks",
        port=io_port,
        log_file=logs / "io-pool.log",
        cwd=ROOT,
        env={**env, "POOL_NAME": "io"},
    )
    with main_pool, io_pool, LocalRuntime(settings) as runtime:
        module_yaml = runtime.statefun.module_yaml_path.read_text()
        assert f'functions: "io/*"\n  urlPathTemplate: "{io_url}/statefun/' in module_yaml
        assert f"http://127.0.0.1:{main_port}/statefun/" in module_yaml
        client = FlinkTasksClient(
            bootstrap_servers=settings.bootstrap_servers,
            default_timeout=timedelta(minutes=3),
        )
        try:
            await client.wait_ready_async()
            result = await client.submit_async(
                in_parallel([double.send(i).continue_with(store) for i in range(4)])
            )
        finally:
            await client.aclose()
    assert result == [
        [{"value": 2 * i, "pool": "main"}, {"value": 2 * i + 1, "pool": "io"}] for i in range(4)
    ]
