"""One cluster-mode runtime for every test of tests/cluster: a JobManager and two TaskManagers
(parallelism 2, exactly-once egress) and a worker process serving tests.cluster.cluster_tasks
(the cluster tests' tasks and the acceptance suite's). Started once: a cluster start costs about
a minute on a 2-core machine. Modules run in name order: the acceptance suite and the cluster
tests at parallelism 2 first, the rescale to 3 last (test_rescale.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from flink_tasks.runtime import LocalRuntime, LocalRuntimeSettings
from flink_tasks.runtime.workers import WorkerProcesses
from tests.cluster.cluster_tasks import tasks
from tests.deploy._ports import free_ports
from tests.faults.harness import worker_env

ROOT = Path(__file__).resolve().parents[2]
WORKER_TARGET = "tests.cluster.cluster_tasks:tasks"


@pytest.fixture(scope="package")
def cluster_worker_ports() -> list[int]:
    """Ports of the cluster: Kafka, its controller, REST, JobManager RPC, the worker."""
    return free_ports(5, low=63100, high=63999)


@pytest.fixture(scope="package")
def cluster_settings(
    tmp_path_factory: pytest.TempPathFactory, cluster_worker_ports: list[int]
) -> LocalRuntimeSettings:
    tmp = tmp_path_factory.mktemp("cluster")
    kafka, controller, rest, rpc, worker = cluster_worker_ports
    settings = LocalRuntimeSettings.from_env(
        run_dir=tmp / "runtime",
        kafka_port=kafka,
        kafka_controller_port=controller,
        rest_port=rest,
        jobmanager_rpc_port=rpc,
        worker_port=worker,
        taskmanagers=2,
        parallelism=2,
        delivery_semantic="exactly-once",
        # four JVMs on two cores: a busy machine needs more than the default 3 min to start them
        statefun_start_timeout=timedelta(minutes=6),
        extra_function_namespaces=tuple(tasks.namespaces),
    )
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    return settings


def serve(settings: LocalRuntimeSettings, target: str = WORKER_TARGET) -> WorkerProcesses:
    """``flink-tasks serve TARGET`` for this cluster, as users run it (not started)."""
    return WorkerProcesses(
        target,
        port=settings.worker_port,
        log_file=settings.logs_dir / "worker.log",
        cwd=ROOT,
        env=worker_env(settings),
    )


@pytest.fixture(scope="package")
def cluster_worker(cluster_settings: LocalRuntimeSettings) -> Iterator[WorkerProcesses]:
    """The worker process (a test may stop it and start another version on its port)."""
    worker = serve(cluster_settings)
    try:
        yield worker.start()
    finally:
        worker.stop()


@pytest.fixture(scope="package")
def cluster(
    cluster_worker: WorkerProcesses, cluster_settings: LocalRuntimeSettings
) -> Iterator[LocalRuntime]:
    runtime = LocalRuntime(cluster_settings).start()
    try:
        yield runtime
    finally:
        # what the run dir records: after test_rescale, three TaskManagers at parallelism 3
        LocalRuntime.attach(cluster_settings).stop(force=True)
