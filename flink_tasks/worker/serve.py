"""``flink-tasks serve MODULE:ATTR``: serve a `FlinkTasks` registry until SIGTERM.

One process (``--workers 1``, the default) runs a `Worker` behind aiohttp on ``host:port``. With
``--workers N`` (Linux) this process becomes a small supervisor: it starts N worker processes
that each bind their own ``SO_REUSEPORT`` socket on the same ``host:port``, so the kernel spreads
StateFun's connections over them; a worker that dies is started again. Any worker process may
serve any address: a pipeline's state lives in Flink and travels with every request.

Sync task bodies run in a pool of child processes by default (``--pool process``, Celery's
prefork model: a task that crashes, hangs or goes over its memory limit costs one child, never the
worker), ``--pool-size`` of them per worker process; ``--pool thread`` runs them in threads of the
worker process instead (cheaper per task, no isolation). Async bodies run on an event loop thread
of their own in either case. See `flink_tasks.worker.pool`.

SIGTERM or SIGINT stops gracefully: stop accepting connections, let running requests finish
(StateFun retries whatever is cut off), exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Literal

from aiohttp import web
from prometheus_client.multiprocess import mark_process_dead

from flink_tasks import wire
from flink_tasks.config import load_attribute, parse_duration
from flink_tasks.engine import EngineSettings
from flink_tasks.kafka_security import KafkaSecurity
from flink_tasks.logs import LogFormat
from flink_tasks.registry import FlinkTasks
from flink_tasks.runtime.settings import LocalRuntimeSettings
from flink_tasks.worker.functions import DEFAULT_INLINE_WAIT, DEFAULT_LEASE, Worker
from flink_tasks.worker.hooks import load_hooks
from flink_tasks.worker.http import create_app
from flink_tasks.worker.metrics import MULTIPROC_DIR_VAR
from flink_tasks.worker.reports import KafkaReportSink
from flink_tasks.worker.task_runner import PoolSettings

log = logging.getLogger("flink_tasks.serve")

#: Environment variable read for the default of ``--retention``.
RETENTION_VAR = "FLINK_TASKS_RETENTION"
#: Environment variable: extra task namespaces the module routes to this worker (comma list).
EXTRA_NAMESPACES_VAR = "FLINK_TASKS_EXTRA_FUNCTION_NAMESPACES"
#: Environment variable: how long a pipeline may make no progress before it is ended as orphaned
#: (``EngineSettings.stall_timeout``; default 24h; ``0`` never).
STALL_TIMEOUT_VAR = "FLINK_TASKS_STALL_TIMEOUT"
#: Environment variable: the Kafka topics replies and events may be written to (comma list).
EGRESS_TOPICS_VAR = "FLINK_TASKS_EGRESS_TOPICS"
#: Environment variables: where long tasks' heartbeats and results go.
BOOTSTRAP_VAR = "FLINK_TASKS_BOOTSTRAP_SERVERS"
TASK_REPORTS_TOPIC_VAR = "FLINK_TASKS_TASK_REPORTS_TOPIC"


@dataclass(frozen=True)
class ServeOptions:
    """What ``flink-tasks serve`` was asked to do."""

    target: str
    host: str = "127.0.0.1"
    port: int = 18000
    workers: int = 1
    reuse_port: bool = False
    retention: timedelta | None = None
    extra_namespaces: tuple[str, ...] = ()
    grace: timedelta = timedelta(seconds=30)
    shutdown_timeout: timedelta = timedelta(seconds=20)
    inline_wait: timedelta = DEFAULT_INLINE_WAIT
    task_lease: timedelta = DEFAULT_LEASE
    env: dict[str, str] = field(default_factory=dict)
    pool: Literal["process", "thread"] = "process"
    pool_size: int | None = None
    max_memory_per_task: int | None = None
    hooks: tuple[str, ...] = ()
    log_format: LogFormat = "text"


def load_registry(target: str) -> FlinkTasks:
    """Import ``package.module:attribute`` (a `FlinkTasks`); the current directory is importable."""
    value = load_attribute(target, example="examples.seed:tasks")
    if not isinstance(value, FlinkTasks):
        raise TypeError(f"{target} is a {type(value).__name__}, not a FlinkTasks registry")
    return value


def build_worker(tasks: FlinkTasks, options: ServeOptions) -> Worker:
    namespaces = frozenset(tasks.namespaces) | frozenset(options.extra_namespaces)
    engine = EngineSettings(served_namespaces=namespaces)
    if options.retention is not None:
        engine = EngineSettings(served_namespaces=namespaces, retention=options.retention)
    if os.environ.get(STALL_TIMEOUT_VAR):  # inherited by the worker processes
        stall = parse_duration(os.environ[STALL_TIMEOUT_VAR])
        engine = replace(engine, stall_timeout=stall or None)
    pool = PoolSettings(
        kind=options.pool,
        size=options.pool_size,
        max_memory=options.max_memory_per_task,
        registry=options.target,
        hooks=options.hooks,
    )
    return Worker(
        tasks,
        engine=engine,
        hooks=[hook for target in options.hooks for hook in load_hooks(target)],
        egress_topics=egress_topics(),
        pool=pool,
        reports=report_sink(),
        inline_wait=options.inline_wait,
        lease=options.task_lease,
    )


def report_sink(environ: Mapping[str, str] | None = None) -> KafkaReportSink:
    """The task-reports topic on ``FLINK_TASKS_BOOTSTRAP_SERVERS`` (default: the local
    runtime's broker), topic ``FLINK_TASKS_TASK_REPORTS_TOPIC`` (default
    ``flink-tasks.task-reports``), with the Kafka security settings of `KafkaSecurity.from_env`."""
    env = os.environ if environ is None else environ
    # TLS / SASL like every other client: FLINK_TASKS_SECURITY_PROTOCOL, ..._SASL_PASSWORD_FILE
    security = KafkaSecurity.from_env(environ=env)
    return KafkaReportSink(
        env.get(BOOTSTRAP_VAR) or LocalRuntimeSettings().bootstrap_servers,
        env.get(TASK_REPORTS_TOPIC_VAR) or wire.DEFAULT_TASK_REPORTS_TOPIC,
        **security.kafka_python_options(),
    )


def egress_topics(environ: dict[str, str] | None = None) -> frozenset[str] | None:
    """The topics replies and events may go to: ``FLINK_TASKS_EGRESS_TOPICS`` (comma list; ``*``
    allows any), else the configured reply and events topics (``FLINK_TASKS_REPLIES_TOPIC``,
    ``FLINK_TASKS_EVENTS_TOPIC``, or their defaults). A reply to a topic that does not exist
    would fail the StateFun job, so a request naming another topic is refused and counted."""
    env = os.environ if environ is None else environ
    listed = env.get(EGRESS_TOPICS_VAR, "").strip()
    if listed == "*":
        return None
    if listed:
        return frozenset(t.strip() for t in listed.split(",") if t.strip())
    return frozenset(
        {
            env.get("FLINK_TASKS_REPLIES_TOPIC") or wire.DEFAULT_REPLY_TOPIC,
            env.get("FLINK_TASKS_EVENTS_TOPIC") or wire.DEFAULT_EVENTS_TOPIC,
        }
    )


async def serve_async(
    worker: Worker,
    options: ServeOptions,
    stop: asyncio.Event,
) -> None:
    """Serve until ``stop`` is set, then shut down gracefully."""
    runner = web.AppRunner(
        create_app(worker),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=options.shutdown_timeout.total_seconds(),
    )
    await worker.runner.start()  # a registry the children cannot import fails here, at once
    await runner.setup()
    site = web.TCPSite(
        runner,
        options.host,
        options.port,
        reuse_address=True,
        reuse_port=options.reuse_port or None,
    )
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        await worker.runner.aclose()
        raise OSError(f"cannot listen on {options.host}:{options.port}: {err}") from err
    log.info(
        "worker pid %d serving %d task types on http://%s:%d",
        os.getpid(),
        len(worker.tasks.task_types),
        options.host,
        options.port,
    )
    try:
        await stop.wait()
    finally:
        log.info("worker pid %d stopping", os.getpid())
        await runner.cleanup()
        await worker.drain(options.shutdown_timeout.total_seconds())
        await worker.runner.aclose()


def run_worker(options: ServeOptions) -> int:
    """One worker process: serve until SIGTERM/SIGINT."""
    worker = build_worker(load_registry(options.target), options)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_async(worker, options, stop)

    asyncio.run(main())
    return 0


@dataclass(frozen=True)
class RestartBackoff:
    """How long the supervisor waits before starting a dead worker again.

    A worker that ran for at least ``healthy_after`` is started again at once; each further exit
    of that slot within ``healthy_after`` of its start waits ``initial``, then ``multiplier``
    times longer, at most ``maximum``. There is no limit on the number of restarts.
    """

    initial: timedelta = timedelta(seconds=0.5)
    maximum: timedelta = timedelta(seconds=30)
    multiplier: float = 2.0
    healthy_after: timedelta = timedelta(seconds=10)

    def delay(self, quick_exits: int) -> float:
        """Seconds to wait after ``quick_exits`` short-lived runs in a row (0: restart now)."""
        if quick_exits <= 0:
            return 0.0
        initial, maximum = self.initial.total_seconds(), self.maximum.total_seconds()
        # exponent capped: past the maximum, more doublings change nothing
        return min(maximum, initial * self.multiplier ** min(quick_exits - 1, 64))


@dataclass
class _Slot:
    """One worker process of the supervisor, and its restart bookkeeping."""

    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_exits: int = 0
    restart_at: float | None = None


class Supervisor:
    """Runs ``workers`` worker processes on one ``SO_REUSEPORT`` port, restarts those that die.

    It never gives up: a worker that keeps dying is started again after a bounded exponential
    back-off (`RestartBackoff`), so a crash loop costs CPU, not the service. Each slot backs off
    on its own; the others keep serving.
    """

    def __init__(self, options: ServeOptions, backoff: RestartBackoff | None = None) -> None:
        if options.workers < 2:
            raise ValueError("a supervisor runs at least 2 workers")
        if not hasattr(socket, "SO_REUSEPORT"):
            raise OSError("--workers > 1 needs SO_REUSEPORT (Linux)")
        self.options = options
        self.backoff = backoff if backoff is not None else RestartBackoff()
        self.slots = [_Slot() for _ in range(options.workers)]
        self.restarts = 0
        self.stopping = False
        self.metrics_dir, self._own_metrics_dir = _metrics_dir()

    def child_command(self) -> list[str]:
        o = self.options
        cmd = [sys.executable, "-m", "flink_tasks", "serve", o.target]
        cmd += ["--host", o.host, "--port", str(o.port), "--workers", "1", "--reuse-port"]
        if o.retention is not None:
            cmd += ["--retention", f"{o.retention.total_seconds():g}s"]
        for ns in o.extra_namespaces:
            cmd += ["--extra-namespace", ns]
        cmd += ["--shutdown-timeout", f"{o.shutdown_timeout.total_seconds():g}s"]
        cmd += ["--inline-wait", f"{o.inline_wait.total_seconds():g}s"]
        cmd += ["--task-lease", f"{o.task_lease.total_seconds():g}s"]
        cmd += ["--pool", o.pool]
        if o.pool_size is not None:
            cmd += ["--pool-size", str(o.pool_size)]
        if o.max_memory_per_task is not None:
            cmd += ["--max-memory-per-task", str(o.max_memory_per_task)]
        for target in o.hooks:
            cmd += ["--hooks", target]
        cmd += ["--log-format", o.log_format]
        return cmd

    def _spawn(self, index: int) -> None:
        env = {**os.environ, **self.options.env, MULTIPROC_DIR_VAR: str(self.metrics_dir)}
        proc = subprocess.Popen(self.child_command(), env=env, preexec_fn=_die_with_parent)
        slot = self.slots[index]
        slot.proc, slot.started_at, slot.restart_at = proc, time.monotonic(), None
        log.info("started worker %d, pid %d", index, proc.pid)

    @property
    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.slots if s.proc is not None and s.proc.poll() is None]

    def run(self) -> int:
        def request_stop(signum: int, _frame: object) -> None:
            self.stopping = True

        previous = {
            sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for i in range(self.options.workers):
                self._spawn(i)
            log.info(
                "supervisor pid %d: %d workers on http://%s:%d, metrics of all in %s",
                os.getpid(),
                self.options.workers,
                self.options.host,
                self.options.port,
                self.metrics_dir,
            )
            while not self.stopping:
                self._watch()
                time.sleep(0.2)
            self._stop_all()
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._own_metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _watch(self) -> None:
        """Note workers that died and start each again when its back-off is over."""
        now = time.monotonic()
        for i, slot in enumerate(self.slots):
            if slot.proc is not None and slot.restart_at is None and slot.proc.poll() is not None:
                self._schedule_restart(i, slot, now)
            if slot.restart_at is not None and now >= slot.restart_at and not self.stopping:
                self.restarts += 1
                self._spawn(i)

    def _schedule_restart(self, index: int, slot: _Slot, now: float) -> None:
        assert slot.proc is not None
        # its in-progress gauges no longer count; its counters and histograms still do
        mark_process_dead(slot.proc.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
        lived = now - slot.started_at
        healthy = lived >= self.backoff.healthy_after.total_seconds()
        slot.quick_exits = 0 if healthy else slot.quick_exits + 1
        delay = self.backoff.delay(slot.quick_exits)
        slot.restart_at = now + delay
        log.warning(
            "worker %d (pid %d) %s after %.1f s; starting it again in %.1f s%s",
            index,
            slot.proc.pid,
            describe_exit(slot.proc.returncode),
            lived,
            delay,
            f" ({slot.quick_exits} short-lived runs in a row)" if slot.quick_exits else "",
        )

    def _stop_all(self) -> None:
        running = [s.proc for s in self.slots if s.proc is not None and s.proc.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.options.grace.total_seconds()
        for proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()
        log.info("supervisor pid %d: all workers stopped", os.getpid())


def _metrics_dir() -> tuple[Path, bool]:
    """Where the worker processes keep their metrics: ``$PROMETHEUS_MULTIPROC_DIR`` if set (its
    old ``*.db`` files removed: counts start at zero with the supervisor), else a new temporary
    folder removed at exit. Returns the folder and whether it is ours to remove."""
    given = os.environ.get(MULTIPROC_DIR_VAR)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):
            old.unlink(missing_ok=True)
        return path, False
    return Path(tempfile.mkdtemp(prefix="flink-tasks-metrics-")), True


def describe_exit(returncode: int) -> str:
    """``exited with code 3`` / ``was killed by SIGKILL`` (Popen: -N is signal N)."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when its supervisor dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def serve(options: ServeOptions) -> int:
    """Run ``flink-tasks serve``: one worker here, or a supervisor of several."""
    if options.workers < 1:
        raise ValueError("--workers must be >= 1")
    if options.workers == 1:
        return run_worker(options)
    load_registry(options.target)  # fail here, once, rather than in every worker
    return Supervisor(options).run()
