"""The local Apache StateFun 3.3.0 job in a Flink 1.16.2 MiniCluster (one JVM)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flink_tasks.runtime.cluster import JOBMANAGER_MAIN, TaskManagers, cluster_flink_conf
from flink_tasks.runtime.configs import render_flink_conf, statefun_dirs
from flink_tasks.runtime.errors import StartupError
from flink_tasks.runtime.module_yaml import render_module_yaml
from flink_tasks.runtime.process import (
    ManagedProcess,
    ensure_ports_free,
    port_accepts,
    rotate_log_file,
    tail,
)
from flink_tasks.runtime.settings import LocalRuntimeSettings
from flink_tasks.runtime.tools import JavaRuntime, maven_classpath

log = logging.getLogger(__name__)

LAUNCHER_MAIN = "io.flinktasks.local.LocalStatefun"
_CHK_RE = re.compile(r"chk-(\d+)$")
_JOB_ID_RE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class JobStatus:
    """What Flink's REST API says about the StateFun job."""

    jid: str
    name: str
    state: str
    tasks_total: int
    tasks_running: int
    completed_checkpoints: int = 0
    latest_checkpoint: str | None = None

    @property
    def ready(self) -> bool:
        return (
            self.state == "RUNNING"
            and self.tasks_total > 0
            and (self.tasks_running == self.tasks_total)
        )


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest retained, complete checkpoint (``<job>/chk-N`` holding ``_metadata``).

    Every run of the job writes under its own job id; the newest job's highest N wins.
    """
    best: tuple[float, int, Path] | None = None
    if not checkpoints_dir.is_dir():
        return None
    for meta in checkpoints_dir.glob("*/chk-*/_metadata"):
        m = _CHK_RE.search(meta.parent.name)
        if not m:
            continue
        try:
            key = (meta.stat().st_mtime, int(m.group(1)), meta.parent)
        except FileNotFoundError:
            continue
        if best is None or key[:2] > best[:2]:
            best = key
    return best[2] if best else None


def prune_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Delete every job's checkpoint directory but the one holding the newest retained
    checkpoint; returns the deleted ones. Call it only while no job of this run dir runs.

    Each start is a new job id, and Flink 1.16 restores in NO_CLAIM mode: the restored job
    never deletes what it restored from, and its first checkpoint is a full one, so an older
    job's directory is not read again once a newer one holds a complete checkpoint.
    """
    newest = latest_checkpoint(checkpoints_dir)
    if newest is None:
        return []
    deleted = []
    for job_dir in sorted(checkpoints_dir.iterdir()):
        # only what Flink wrote there: a directory named by a job id
        if job_dir != newest.parent and job_dir.is_dir() and _JOB_ID_RE.fullmatch(job_dir.name):
            shutil.rmtree(job_dir, ignore_errors=True)
            deleted.append(job_dir)
    return deleted


class StatefunJob:
    """Start/stop the StateFun JVM, wait for the job, restore from checkpoints."""

    def __init__(self, settings: LocalRuntimeSettings) -> None:
        self.settings = settings
        self.dirs = statefun_dirs(settings)
        # the MiniCluster JVM, or in cluster mode the JobManager (its TaskManagers: below)
        self.process = ManagedProcess(
            "statefun", settings.run_dir / "statefun.pid", settings.statefun_log_file
        )
        self.taskmanagers = TaskManagers(settings)

    @property
    def project(self) -> Path:
        return self.settings.deploy_dir / "statefun"

    @property
    def module_yaml_path(self) -> Path:
        return self.dirs["conf"] / "module.yaml"

    @property
    def ports(self) -> dict[int, str]:
        ports = {self.settings.rest_port: "Flink REST (StateFun)"}
        if self.settings.taskmanagers:
            ports[self.settings.jobmanager_rpc_port] = "Flink JobManager RPC"
        # not the metrics port: Flink runs on without its reporter (and logs why) when it is busy
        return ports

    def classpath(self) -> list[str]:
        return maven_classpath(
            self.project, package=True, timeout=self.settings.build_timeout.total_seconds()
        )

    def write_configs(self) -> None:
        for key in ("conf", "checkpoints", "rocksdb", "tmp"):
            self.dirs[key].mkdir(parents=True, exist_ok=True)
        self.module_yaml_path.write_text(render_module_yaml(self.settings))
        conf = render_flink_conf(self.settings, self.module_yaml_path)
        if self.settings.taskmanagers:
            conf += "".join(f"{k}: {v}\n" for k, v in cluster_flink_conf(self.settings).items())
        (self.dirs["conf"] / "flink-conf.yaml").write_text(conf)

    def command(
        self, java: JavaRuntime, classpath: list[str], restore_from: Path | None
    ) -> list[str]:
        heap = self.settings.statefun_heap_mb
        if self.settings.taskmanagers:
            heap //= 2  # the JobManager runs no tasks (jobmanager.memory.heap.size)
        cmd = [
            java.executable,
            *java.flink_flags,
            f"-Xms{min(512, heap)}m",
            f"-Xmx{heap}m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Djava.io.tmpdir={self.dirs['tmp']}",
            f"-Dlog4j.configurationFile={self.project / 'log4j2.properties'}",
            # lets the Flink web/REST API serve the log (it reads this property)
            f"-Dlog.file={self.settings.statefun_log_file}",
            "-cp",
            os.pathsep.join(classpath),
            JOBMANAGER_MAIN if self.settings.taskmanagers else LAUNCHER_MAIN,
            str(self.dirs["conf"]),
        ]
        if restore_from is not None:
            cmd.append(f"execution.savepoint.path={restore_from.resolve().as_uri()}")
        return cmd

    def start(
        self,
        java: JavaRuntime,
        *,
        from_checkpoint: bool = False,
        rotate_log: bool = True,
        savepoint: Path | None = None,
    ) -> float:
        """Start the JVM and wait until the job runs (and, if configured, has checkpointed),
        restored from `savepoint` if given.

        Returns the seconds from JVM start to ready.
        """
        ensure_ports_free(self.ports)
        classpath = self.classpath()
        self.write_configs()
        for job_dir in prune_checkpoints(self.dirs["checkpoints"]):
            log.info("deleted the checkpoints of an earlier job: %s", job_dir)
        restore_from = latest_checkpoint(self.dirs["checkpoints"]) if from_checkpoint else None
        restore_from = savepoint or restore_from
        if from_checkpoint and restore_from is None:
            log.warning("no retained checkpoint in %s; starting fresh", self.dirs["checkpoints"])
        if restore_from is not None:
            log.info("restoring StateFun from %s", restore_from)
        if rotate_log:
            rotate_log_file(self.settings.statefun_log_file)
        started = time.monotonic()
        self.process.start(
            self.command(java, classpath, restore_from),
            cwd=self.settings.run_dir,
            rotate_log=False,
        )
        try:
            self.taskmanagers.start(java, classpath, rotate_log=rotate_log)
            self.wait_ready(
                self.settings.statefun_start_timeout.total_seconds(),
                wait_for_checkpoint=self.settings.wait_for_checkpoint,
                restored_from=restore_from if savepoint is None else None,
            )
        except BaseException:
            self.process.stop(grace=5.0)
            self.taskmanagers.stop()
            raise
        elapsed = time.monotonic() - started
        log.info("StateFun job running after %.1fs (REST %s)", elapsed, self.settings.rest_url)
        return elapsed

    # --- REST ----------------------------------------------------------------------------------
    def _get(self, path: str, timeout: float = 2.0) -> Any:
        with urllib.request.urlopen(self.settings.rest_url + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def job_status(self, *, with_checkpoints: bool = True) -> JobStatus | None:
        """The job's state from ``/jobs/overview`` (None if the REST API does not answer)."""
        try:
            overview = self._get("/jobs/overview")
        except (OSError, ValueError, urllib.error.URLError):
            return None
        jobs = overview.get("jobs", [])
        if not jobs:
            return None
        # the newest job (a MiniCluster runs exactly one)
        job = max(jobs, key=lambda j: j.get("start-time", 0))
        tasks = job.get("tasks", {})
        status = JobStatus(
            jid=job["jid"],
            name=job.get("name", ""),
            state=job.get("state", "UNKNOWN"),
            tasks_total=int(tasks.get("total", 0)),
            tasks_running=int(tasks.get("running", 0)),
        )
        if not with_checkpoints:
            return status
        try:
            chk = self._get(f"/jobs/{status.jid}/checkpoints")
        except (OSError, ValueError, urllib.error.URLError):
            return status
        latest = (chk.get("latest") or {}).get("completed") or {}
        return JobStatus(
            **{
                **status.__dict__,
                "completed_checkpoints": int((chk.get("counts") or {}).get("completed", 0)),
                "latest_checkpoint": latest.get("external_path"),
            }
        )

    def wait_ready(
        self, timeout: float, *, wait_for_checkpoint: bool, restored_from: Path | None = None
    ) -> JobStatus:
        """Until the job runs and has checkpointed (`wait_for_checkpoint`), or runs and waits
        for a worker that does not answer; `restored_from`: the checkpoint it restores, named
        in the error."""
        deadline = time.monotonic() + timeout
        checkpoint_grace = max(5.0, 3 * self.settings.checkpoint_interval.total_seconds())
        running_since: float | None = None
        last: JobStatus | None = None
        while True:
            self.process.check_alive("start-up")
            self.taskmanagers.check_alive("start-up")
            last = self.job_status(with_checkpoints=wait_for_checkpoint)
            if last is not None and last.state in ("FAILED", "CANCELED", "FINISHED"):
                raise StartupError(
                    f"StateFun job {last.jid} is {last.state}",
                    log_file=self.settings.statefun_log_file,
                    log_tail=tail(self.settings.statefun_log_file),
                )
            if last is None or last.state != "RUNNING":
                running_since = None  # (again) not running: the grace starts over
            else:
                if last.ready and (not wait_for_checkpoint or last.completed_checkpoints >= 1):
                    return last
                # a call to a worker that is not up yet holds the job back: the subtask takes
                # no checkpoint barrier while its first request waits, and a call restored
                # from a checkpoint is resent before the task runs (it stays INITIALIZING).
                # E.g. restored or replayed input before `serve` starts: the job is up, and
                # goes on once the worker answers
                running_since = running_since or time.monotonic()
                missing = (
                    [url for url, up in self.workers_answering().items() if not up]
                    if time.monotonic() - running_since > checkpoint_grace
                    else []
                )
                if missing:
                    log.info(
                        "StateFun job running, waiting for a worker at %s (tasks %d/%d "
                        "running, %d checkpoints)",
                        ", ".join(missing),
                        last.tasks_running,
                        last.tasks_total,
                        last.completed_checkpoints,
                    )
                    return last
            if time.monotonic() > deadline:
                seen = (
                    f"last seen: state {last.state}, tasks {last.tasks_running}/"
                    f"{last.tasks_total} running, {last.completed_checkpoints} checkpoints"
                    if last
                    else "the REST API never listed a job"
                )
                hint = (
                    f"; it restores {restored_from} (`flink-tasks local up --fresh` starts "
                    "without it)"
                    if restored_from
                    else ""
                )
                raise StartupError(
                    f"StateFun job not ready at {self.settings.rest_url} within {timeout:.0f}s "
                    f"({seen}){hint}",
                    log_file=self.settings.statefun_log_file,
                    log_tail=tail(self.settings.statefun_log_file, 30),
                )
            time.sleep(0.25)

    def workers_answering(self) -> dict[str, bool]:
        """The worker URLs of the module (the pools' and the default one), each with whether
        it takes a TCP connection now."""
        urls = set(self.settings.endpoint_urls.values())
        if self.settings.function_namespace not in self.settings.endpoint_urls:
            urls.add(self.settings.worker_url)
        answering = {}
        for url in sorted(urls):
            parsed = urllib.parse.urlsplit(url)
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            answering[url] = port_accepts(port, parsed.hostname or "127.0.0.1")
        return answering

    def wait_for_checkpoint(self, *, after: int = 0, timeout: float = 60.0) -> JobStatus:
        """Wait until more than ``after`` checkpoints have completed in the current job."""
        deadline = time.monotonic() + timeout
        while True:
            self.process.check_alive("a checkpoint wait")
            status = self.job_status()
            if status is not None and status.completed_checkpoints > after:
                return status
            if time.monotonic() > deadline:
                raise StartupError(
                    f"no checkpoint completed within {timeout:.0f}s",
                    log_file=self.settings.statefun_log_file,
                    log_tail=tail(self.settings.statefun_log_file, 20),
                )
            time.sleep(0.2)

    def stop(self, *, kill: bool = False) -> bool:
        was_running = self.process.stop(self.settings.stop_grace.total_seconds(), kill=kill)
        self.taskmanagers.stop(kill=kill)
        return was_running
