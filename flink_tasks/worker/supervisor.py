"""``serve --workers N``: the supervisor that runs N worker processes on one ``SO_REUSEPORT``
port, kills those that stop beating (`flink_tasks.worker.heartbeat`) and starts again those that
die, after a bounded back-off."""

from __future__ import annotations

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
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.multiprocess import mark_process_dead

from flink_tasks.worker.heartbeat import FIRST_BEAT_WITHIN, HEARTBEAT_FD_VAR, HeartbeatPipe
from flink_tasks.worker.metrics import MULTIPROC_DIR_VAR

if TYPE_CHECKING:
    from flink_tasks.worker.serve import ServeOptions

log = logging.getLogger("flink_tasks.serve")


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
    heartbeat: HeartbeatPipe | None = None
    killed_for_silence: bool = False


class Supervisor:
    """Runs ``workers`` worker processes on one ``SO_REUSEPORT`` port, restarts those that die.

    It never gives up: a worker that keeps dying is started again after a bounded exponential
    back-off (`RestartBackoff`), so a crash loop costs CPU, not the service. Each slot backs off
    on its own; the others keep serving. A worker silent for ``options.worker_timeout`` (stopped,
    or its event loop blocked) is SIGKILLed, and then started again like any that died.
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
        cmd += ["--batch-wait", f"{o.batch_wait.total_seconds():g}s"]
        cmd += ["--queue-wait", f"{o.queue_wait.total_seconds():g}s"]
        cmd += ["--task-lease", f"{o.task_lease.total_seconds():g}s"]
        cmd += ["--pool", o.pool]
        if o.pool_size is not None:
            cmd += ["--pool-size", str(o.pool_size)]
        if o.max_memory_per_task is not None:
            cmd += ["--max-memory-per-task", str(o.max_memory_per_task)]
        for target in o.hooks:
            cmd += ["--hooks", target]
        cmd += ["--log-format", o.log_format]
        if o.task_buckets is not None:
            cmd += ["--task-buckets", str(o.task_buckets)]
        return cmd

    def _spawn(self, index: int) -> None:
        slot = self.slots[index]
        env = {**os.environ, **self.options.env, MULTIPROC_DIR_VAR: str(self.metrics_dir)}
        if slot.heartbeat is not None:
            slot.heartbeat.close()
        slot.heartbeat = HeartbeatPipe() if self.options.worker_timeout else None
        pass_fds: tuple[int, ...] = ()
        if slot.heartbeat is not None:
            env[HEARTBEAT_FD_VAR] = str(slot.heartbeat.child_fd)
            pass_fds = (slot.heartbeat.child_fd,)
        proc = subprocess.Popen(
            self.child_command(), env=env, pass_fds=pass_fds, preexec_fn=_die_with_parent
        )
        if slot.heartbeat is not None:
            slot.heartbeat.child_started()
        slot.proc, slot.started_at, slot.restart_at = proc, time.monotonic(), None
        slot.killed_for_silence = False
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
            for slot in self.slots:
                if slot.heartbeat is not None:
                    slot.heartbeat.close()
            if self._own_metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _watch(self) -> None:
        """Kill silent workers, note workers that died and start each again when its back-off
        is over."""
        now = time.monotonic()
        for i, slot in enumerate(self.slots):
            if slot.proc is not None and slot.restart_at is None and slot.proc.poll() is None:
                self._check_heartbeat(i, slot, now)
            if slot.proc is not None and slot.restart_at is None and slot.proc.poll() is not None:
                self._schedule_restart(i, slot, now)
            if slot.restart_at is not None and now >= slot.restart_at and not self.stopping:
                self.restarts += 1
                self._spawn(i)

    def _check_heartbeat(self, index: int, slot: _Slot, now: float) -> None:
        if slot.heartbeat is None or slot.killed_for_silence or slot.proc is None:
            return
        slot.heartbeat.drain()
        last = slot.heartbeat.last_beat
        timeout = self.options.worker_timeout.total_seconds()
        silent = now - (last if last is not None else slot.started_at)
        if silent <= (timeout if last is not None else max(timeout, FIRST_BEAT_WITHIN)):
            return
        # a stopped process or a blocked loop holds StateFun's calls until their budget runs
        # out; killed, its connections close and StateFun retries the calls on the others
        log.error(
            "worker %d (pid %d) sent no heartbeat for %.1f s (stopped, or its event loop "
            "blocked); killing it",
            index,
            slot.proc.pid,
            silent,
        )
        slot.killed_for_silence = True
        with contextlib.suppress(ProcessLookupError):
            slot.proc.kill()

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
