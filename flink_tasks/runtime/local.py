"""``LocalRuntime``: Kafka + StateFun on this machine, started, reused, stopped, restarted."""

from __future__ import annotations

import fcntl
import json
import logging
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from flink_tasks.runtime.errors import SettingsMismatchError
from flink_tasks.runtime.kafka import KafkaBroker
from flink_tasks.runtime.process import ManagedProcess, rss_bytes
from flink_tasks.runtime.settings import LocalRuntimeSettings
from flink_tasks.runtime.statefun import JobStatus, StatefunJob, latest_checkpoint
from flink_tasks.runtime.tools import JavaRuntime, find_java

log = logging.getLogger(__name__)

STATE_FILE = "runtime.json"


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    running: bool
    pid: int | None
    ports: dict[int, str]
    log_file: Path
    rss_bytes: int | None = None
    ready_seconds: float | None = None


@dataclass(frozen=True)
class RuntimeStatus:
    run_dir: Path
    kafka: ProcessStatus
    statefun: ProcessStatus
    job: JobStatus | None
    java: str | None
    latest_checkpoint: Path | None
    started_at: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    #: cluster mode: TaskManager name -> pid (None: not running)
    taskmanagers: dict[str, int | None] = field(default_factory=dict)
    #: the module's worker URLs (while StateFun runs) and whether each takes connections now
    workers: dict[str, bool] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.kafka.running and self.statefun.running

    @property
    def ready(self) -> bool:
        return self.running and self.job is not None and self.job.ready


class LocalRuntime:
    """The local runtime: a Kafka broker and a StateFun job, each in its own JVM.

    ``start()`` reuses processes that already run in ``settings.run_dir`` (e.g. started by
    ``flink-tasks local up``) when they were started with the same settings, and starts what is
    missing. ``stop()`` stops only what this object started, unless ``force=True``.
    """

    def __init__(self, settings: LocalRuntimeSettings | None = None) -> None:
        self.settings = settings if settings is not None else LocalRuntimeSettings.from_env()
        self.kafka = KafkaBroker(self.settings)
        self.statefun = StatefunJob(self.settings)
        self.started: set[str] = set()
        self.reused: set[str] = set()
        self._java: dict[str, JavaRuntime] = {}

    @classmethod
    def attach(cls, settings: LocalRuntimeSettings | None = None) -> LocalRuntime:
        """The runtime recorded in ``settings.run_dir`` (by whoever started it), with the
        settings it was started with; ``settings`` only chooses the run dir (and launcher
        timeouts). Falls back to ``settings`` when nothing was recorded."""
        base = settings if settings is not None else LocalRuntimeSettings.from_env()
        try:
            state = json.loads((base.run_dir / STATE_FILE).read_text())
            recorded = state.get("settings") or state["identity"]
        except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
            return cls(base)
        launcher = {name: getattr(base, name) for name in base.launcher_field_names()}
        return cls(LocalRuntimeSettings.from_identity(recorded, **launcher))

    # --- convenience ---------------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        return self.settings.bootstrap_servers

    @property
    def rest_url(self) -> str:
        return self.settings.rest_url

    @property
    def run_dir(self) -> Path:
        return self.settings.run_dir

    def java(self, for_flink: bool = True) -> JavaRuntime:
        key = "flink" if for_flink else "kafka"
        if key not in self._java:
            self._java[key] = find_java(self.settings.java, for_flink=for_flink)
        return self._java[key]

    # --- lifecycle -----------------------------------------------------------------------------
    def build(self) -> dict[str, list[str]]:
        """Resolve (download on first use) and build both JVM classpaths without starting
        anything; returns ``{"kafka": [...], "statefun": [...]}`` classpath entries."""
        return {"kafka": self.kafka.classpath(), "statefun": self.statefun.classpath()}

    def start(self) -> LocalRuntime:
        """Start (or reuse) Kafka, then StateFun; return when both are ready."""
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._check_reusable()
            state = self._read_state() if self._anything_running() else {}
            if not self._anything_running():
                state = {
                    "identity": self.settings.identity(),
                    "settings": self.settings.recorded(),
                    "started_at": datetime.now().isoformat(timespec="seconds"),
                }
            if self.kafka.process.is_running():
                self.kafka.wait_ready(self.settings.kafka_start_timeout.total_seconds())
                self.kafka.create_topics()
                self.reused.add("kafka")
            else:
                java = self.java(for_flink=False)
                state["kafka_ready_seconds"] = round(self.kafka.start(java), 2)
                state["kafka_java"] = java.describe()
                self.started.add("kafka")
                self._write_state(state)
            if self.statefun.process.is_running():
                self.statefun.wait_ready(
                    self.settings.statefun_start_timeout.total_seconds(),
                    wait_for_checkpoint=False,
                )
                self.reused.add("statefun")
            else:
                java = self.java(for_flink=True)
                try:
                    seconds = self.statefun.start(
                        java, from_checkpoint=self.settings.restore_from_checkpoint
                    )
                except BaseException:
                    if "kafka" in self.started:
                        self.kafka.stop()
                        self.started.discard("kafka")
                    raise
                state["statefun_ready_seconds"] = round(seconds, 2)
                state["statefun_java"] = java.describe()
                self.started.add("statefun")
            state["identity"] = self.settings.identity()
            state.setdefault("settings", self.settings.recorded())
            self._write_state(state)
        if self.reused:
            log.info(
                "reusing the running %s in %s", " and ".join(sorted(self.reused)), self.run_dir
            )
        return self

    def stop(self, *, force: bool = False) -> None:
        """Stop StateFun, then Kafka: only what this object started, or everything if force."""
        with self._lock():
            if force or "statefun" in self.started:
                self.statefun.stop()
                self.started.discard("statefun")
            if force or "kafka" in self.started:
                self.kafka.stop()
                self.started.discard("kafka")
            if not self._anything_running():
                (self.run_dir / STATE_FILE).unlink(missing_ok=True)

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- fault injection -----------------------------------------------------------------------
    def kill_statefun(self) -> None:
        """``kill -9`` the StateFun JVM (its retained checkpoints stay on disk)."""
        self.statefun.stop(kill=True)

    def restart_statefun(self, *, from_checkpoint: bool = True, kill: bool = False) -> float:
        """Stop StateFun (SIGTERM, or SIGKILL if ``kill``) and start it again, by default
        restored from the newest retained checkpoint. Returns seconds to ready."""
        self.statefun.stop(kill=kill)
        java = self.java(for_flink=True)
        seconds = self.statefun.start(java, from_checkpoint=from_checkpoint, rotate_log=False)
        self.started.add("statefun")
        return seconds

    def restart_statefun_from(self, savepoint: Path, settings: LocalRuntimeSettings) -> float:
        """Stop StateFun (a job stopped with a savepoint has ended its JVMs' work) and start it
        with `settings` (e.g. another parallelism), restored from `savepoint`; Kafka keeps
        running. Returns seconds to ready (see flink_tasks.runtime.rescale)."""
        with self._lock():
            self.statefun.stop()
            self.settings = settings
            self.statefun = StatefunJob(settings)
            seconds = self.statefun.start(
                self.java(for_flink=True), savepoint=savepoint, rotate_log=False
            )
            self.started.add("statefun")
            state = self._read_state()
            state.update(identity=settings.identity(), settings=settings.recorded())
            state["statefun_ready_seconds"] = round(seconds, 2)
            self._write_state(state)
        return seconds

    def kill_taskmanager(self, index: int, sig: signal.Signals = signal.SIGKILL) -> list[int]:
        """``kill -9`` the JVM of TaskManager ``index`` (1-based) of the cluster mode; it starts
        again by itself, as a pod's container does (or ``sig``: SIGSTOP, SIGCONT). Returns the
        pids signalled."""
        return self.statefun.taskmanagers.kill(index, sig)

    def restart_taskmanager(self, index: int) -> int:
        """Start TaskManager ``index`` again (as Kubernetes restarts a pod); returns its pid."""
        return self.statefun.taskmanagers.restart(
            index, self.java(for_flink=True), self.statefun.classpath()
        )

    def kill_kafka(self) -> None:
        """``kill -9`` the Kafka broker."""
        self.kafka.stop(kill=True)

    def restart_kafka(self, *, kill: bool = False) -> float:
        """Stop the broker (SIGTERM, or SIGKILL if ``kill``) and start it again on the same
        data. Returns seconds to ready."""
        self.kafka.stop(kill=kill)
        seconds = self.kafka.start(self.java(for_flink=False), rotate_log=False)
        self.started.add("kafka")
        return seconds

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.settings.checkpoints_dir)

    def wait_for_checkpoint(self, *, timeout: float = 60.0) -> JobStatus:
        """Wait for one more completed checkpoint than now (e.g. so exactly-once output is
        committed, or a kill -9 afterwards restores a state that includes earlier input)."""
        now = self.statefun.job_status()
        return self.statefun.wait_for_checkpoint(
            after=now.completed_checkpoints if now else 0, timeout=timeout
        )

    def job_status(self) -> JobStatus | None:
        return self.statefun.job_status()

    # --- status --------------------------------------------------------------------------------
    def status(self) -> RuntimeStatus:
        state = self._read_state()
        running = self.statefun.process.is_running()
        return RuntimeStatus(
            run_dir=self.run_dir,
            kafka=self._process_status(
                self.kafka.process, self.kafka.ports, state.get("kafka_ready_seconds")
            ),
            statefun=self._process_status(
                self.statefun.process, self.statefun.ports, state.get("statefun_ready_seconds")
            ),
            job=self.statefun.job_status() if running else None,
            java=state.get("statefun_java"),
            latest_checkpoint=self.latest_checkpoint(),
            started_at=state.get("started_at"),
            settings=state.get("settings") or state.get("identity", {}),
            taskmanagers=self.statefun.taskmanagers.pids(),
            workers=self.statefun.workers_answering() if running else {},
        )

    @staticmethod
    def _process_status(
        proc: ManagedProcess, ports: dict[int, str], ready: float | None
    ) -> ProcessStatus:
        pid = proc.pid
        return ProcessStatus(
            name=proc.name,
            running=pid is not None,
            pid=pid,
            ports=ports,
            log_file=proc.log_file,
            rss_bytes=rss_bytes(pid) if pid is not None else None,
            ready_seconds=ready,
        )

    # --- internals -----------------------------------------------------------------------------
    def _anything_running(self) -> bool:
        return (
            self.kafka.process.is_running()
            or self.statefun.process.is_running()
            or self.statefun.taskmanagers.any_running()
        )

    def _check_reusable(self) -> None:
        if not self._anything_running():
            return
        recorded = self._read_state().get("identity")
        mine = self.settings.identity()
        if recorded == mine:
            return
        if not isinstance(recorded, dict):
            raise SettingsMismatchError(
                f"processes are running in {self.run_dir} but {STATE_FILE} is missing; "
                "stop them with `flink-tasks local down`"
            )
        diff = {k: (recorded.get(k), v) for k, v in mine.items() if recorded.get(k) != v}
        lines = "\n".join(f"  {k}: running={a!r} wanted={b!r}" for k, (a, b) in diff.items())
        raise SettingsMismatchError(
            f"a runtime with other settings is already running in {self.run_dir}:\n{lines}\n"
            "stop it with `flink-tasks local down` (or use another run dir and ports)"
        )

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.run_dir / STATE_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_state(self, state: dict[str, Any]) -> None:
        path = self.run_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """One launcher at a time per run dir (e.g. parallel pytest sessions)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / ".lock").open("w") as fh:
            started = time.monotonic()
            fcntl.flock(fh, fcntl.LOCK_EX)
            waited = time.monotonic() - started
            if waited > 1:
                log.info("waited %.1fs for another launcher using %s", waited, self.run_dir)
            yield
