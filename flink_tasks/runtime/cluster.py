"""Cluster mode of the local runtime: a Flink JobManager and N TaskManagers, each its own JVM.

The same topology as docker-compose and Kubernetes (a JobManager running the StateFun job in
application mode, TaskManagers connecting to it over RPC, records shuffled between them over
Flink's network stack, RocksDB state and checkpoints in a directory all of them share), on
127.0.0.1 without Docker. The JobManager is ``io.flinktasks.local.StandaloneApplicationCluster``
(Flink's StandaloneApplicationClusterEntryPoint for a job class on the classpath, running
``StatefulFunctionsJob``); a TaskManager is Flink's own ``TaskManagerRunner``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from flink_tasks.runtime.configs import statefun_dirs
from flink_tasks.runtime.process import ManagedProcess
from flink_tasks.runtime.settings import LocalRuntimeSettings
from flink_tasks.runtime.tools import JavaRuntime

log = logging.getLogger(__name__)

JOBMANAGER_MAIN = "io.flinktasks.local.StandaloneApplicationCluster"
TASKMANAGER_MAIN = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner"

#: Memory of each TaskManager (Flink derives the process size from these): RocksDB lives in
#: managed memory, StateFun's feedback loop and the remote-call buffers on the task heap.
TASK_HEAP_MB = 256
MANAGED_MB = 128
FRAMEWORK_HEAP_MB = 128
OFF_HEAP_MB = 128 + 64  # framework off-heap + network buffers


def cluster_flink_conf(settings: LocalRuntimeSettings) -> dict[str, str | int]:
    """What the JobManager and every TaskManager add to the MiniCluster's flink-conf.yaml."""
    return {
        "jobmanager.rpc.port": settings.jobmanager_rpc_port,
        "jobmanager.memory.heap.size": f"{settings.statefun_heap_mb // 2}m",
        "taskmanager.numberOfTaskSlots": settings.slots_per_taskmanager,
        # one subtask per TaskManager while there are TaskManagers free, as on a real cluster
        "cluster.evenly-spread-out-slots": "true",
        # what Flink's start scripts compute and pass to a TaskManager (BashJavaUtils)
        "taskmanager.cpu.cores": settings.slots_per_taskmanager,
        "taskmanager.memory.task.off-heap.size": "0m",
        "taskmanager.memory.framework.off-heap.size": "128m",
        "taskmanager.memory.task.heap.size": f"{TASK_HEAP_MB}m",
        "taskmanager.memory.managed.size": f"{MANAGED_MB}m",
        "taskmanager.memory.framework.heap.size": f"{FRAMEWORK_HEAP_MB}m",
        "taskmanager.memory.network.min": "64m",
        "taskmanager.memory.network.max": "64m",
        "taskmanager.memory.jvm-metaspace.size": "192m",
        "taskmanager.memory.jvm-overhead.min": "192m",
        "taskmanager.memory.jvm-overhead.max": "192m",
        "taskmanager.rpc.port": "0",
        "taskmanager.data.port": "0",
        # a task that does not finish cancelling ends its TaskManager after this (Flink's
        # default is 180 s); keep_running starts it again, as Kubernetes restarts the pod. A
        # StateFun task cancelled while its checkpoint logs the feedback loop never finishes.
        "task.cancellation.timeout": "30000",
        # a killed TaskManager is noticed within seconds (its RPC connection is refused), not
        # after the default 50 s heartbeat timeout
        "heartbeat.interval": "2000",
        # a job stopped with a savepoint leaves the JobManager up (its REST API reports where
        # the savepoint is); the launcher stops it and starts the job again from the savepoint
        "execution.shutdown-on-application-finish": "false",
        "heartbeat.timeout": "15000",
    }


class TaskManagers:
    """N ``TaskManagerRunner`` JVMs with their own pid, log, RocksDB and tmp directories."""

    def __init__(self, settings: LocalRuntimeSettings) -> None:
        self.settings = settings
        self.dirs = statefun_dirs(settings)
        self.processes = [
            ManagedProcess(
                f"taskmanager-{i}",
                settings.run_dir / f"taskmanager-{i}.pid",
                settings.logs_dir / f"taskmanager-{i}.log",
            )
            for i in range(1, settings.taskmanagers + 1)
        ]

    def command(self, java: JavaRuntime, classpath: list[str], index: int) -> list[str]:
        work = self.dirs["base"] / f"taskmanager-{index}"
        tmp = work / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        log_file = self.processes[index - 1].log_file
        log4j = self.settings.deploy_dir / "statefun" / "log4j2.properties"
        return [
            # started again whenever it exits, as a pod's container is
            sys.executable,
            "-m",
            "flink_tasks.runtime.keep_running",
            "--",
            java.executable,
            *java.flink_flags,
            f"-Xms{FRAMEWORK_HEAP_MB + TASK_HEAP_MB}m",
            f"-Xmx{FRAMEWORK_HEAP_MB + TASK_HEAP_MB}m",
            f"-XX:MaxDirectMemorySize={OFF_HEAP_MB}m",
            "-XX:MaxMetaspaceSize=192m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Djava.io.tmpdir={tmp}",
            f"-Dlog4j.configurationFile={log4j}",
            f"-Dlog.file={log_file}",
            "-cp",
            os.pathsep.join(classpath),
            TASKMANAGER_MAIN,
            "--configDir",
            str(self.dirs["conf"]),
            f"-Dtaskmanager.resource-id=taskmanager-{index}",
            f"-Dstate.backend.rocksdb.localdir={work / 'rocksdb'}",
            f"-Dio.tmp.dirs={tmp}",
        ]

    def start(self, java: JavaRuntime, classpath: list[str], *, rotate_log: bool = True) -> None:
        for index, proc in enumerate(self.processes, 1):
            if not proc.is_running():
                proc.start(
                    self.command(java, classpath, index),
                    cwd=self.settings.run_dir,
                    rotate_log=rotate_log,
                )

    def restart(self, index: int, java: JavaRuntime, classpath: list[str]) -> int:
        """Start TaskManager ``index`` (1-based) again, e.g. after :meth:`kill`; returns its pid."""
        proc = self.processes[index - 1]
        proc.stop(self.settings.stop_grace.total_seconds())
        return proc.start(
            self.command(java, classpath, index), cwd=self.settings.run_dir, rotate_log=False
        )

    def kill(self, index: int, sig: signal.Signals = signal.SIGKILL) -> list[int]:
        """Send ``sig`` to the JVM of TaskManager ``index`` (1-based): SIGKILL as a container
        crashes (keep_running starts it again), SIGSTOP and SIGCONT as a node or VM pauses.
        Returns the pids signalled."""
        keeper = self.processes[index - 1].pid
        if keeper is None:
            return []
        children = Path(f"/proc/{keeper}/task/{keeper}/children")
        try:
            pids = [int(p) for p in children.read_text().split()]
        except OSError:
            pids = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids

    def check_alive(self, what: str) -> None:
        for proc in self.processes:
            proc.check_alive(what)

    def any_running(self) -> bool:
        return any(proc.is_running() for proc in self.processes)

    def pids(self) -> dict[str, int | None]:
        return {proc.name: proc.pid for proc in self.processes}

    def log_files(self) -> list[Path]:
        return [proc.log_file for proc in self.processes]

    def stop(self, *, kill: bool = False) -> None:
        for proc in self.processes:
            proc.stop(self.settings.stop_grace.total_seconds(), kill=kill)
