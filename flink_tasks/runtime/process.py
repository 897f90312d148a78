"""Background JVM processes with pid files, process groups and log files."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from flink_tasks.runtime.errors import PortInUseError, StartupError

log = logging.getLogger(__name__)


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on host:port (binds the way a JVM server socket does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """True if a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_ports_free(ports: dict[int, str], wait: float = 5.0) -> None:
    """Raise PortInUseError for the first port still taken after ``wait`` seconds (a JVM we
    just stopped may take a moment to release its sockets)."""
    deadline = time.monotonic() + wait
    for port, what in ports.items():
        while not port_is_free(port):
            if time.monotonic() > deadline:
                raise PortInUseError(port, what)
            time.sleep(0.1)


def _proc_start_ticks(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (None if gone or not on Linux)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # zombie / dead: as good as gone
        return None
    return int(fields[19])


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """True if ``pid`` runs (and, if given, is the same process that started at start_ticks)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if Path("/proc").is_dir():
        ticks = _proc_start_ticks(pid)
        if ticks is None:
            return False
        if start_ticks is not None and ticks != start_ticks:
            return False
    return True


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process, from /proc (None if unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class _DetachedPopen(subprocess.Popen[bytes]):
    """A Popen whose process is meant to outlive this object (it is found again through its
    pid file), so garbage collection must not warn "subprocess is still running"."""

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.poll()


@dataclass(frozen=True)
class PidRecord:
    pid: int
    start_ticks: int | None

    def alive(self) -> bool:
        return pid_alive(self.pid, self.start_ticks)


class ManagedProcess:
    """One long-running process: its command, pid file and log file.

    The process runs in its own session (process group), with stdin closed and stdout/stderr
    appended to ``log_file``. Another Python process can find it again through ``pid_file``.
    """

    def __init__(self, name: str, pid_file: Path, log_file: Path) -> None:
        self.name = name
        self.pid_file = pid_file
        self.log_file = log_file
        self._popen: _DetachedPopen | None = None

    # --- pid file ------------------------------------------------------------------------------
    def read_pid(self) -> PidRecord | None:
        try:
            parts = self.pid_file.read_text().split()
        except FileNotFoundError:
            return None
        if not parts:
            return None
        ticks = int(parts[1]) if len(parts) > 1 and parts[1] != "-" else None
        return PidRecord(int(parts[0]), ticks)

    @property
    def pid(self) -> int | None:
        rec = self.read_pid()
        return rec.pid if rec is not None and rec.alive() else None

    def is_running(self) -> bool:
        if self._popen is not None and self._popen.poll() is not None:
            return False
        rec = self.read_pid()
        return rec is not None and rec.alive()

    # --- start / stop --------------------------------------------------------------------------
    def start(
        self,
        cmd: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str] | None = None,
        rotate_log: bool = True,
    ) -> int:
        """Start ``cmd`` in a new session; ``rotate_log`` keeps the old log as ``<log>.1``,
        otherwise the new run is appended to the same file (used by restarts)."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        if rotate_log:
            rotate_log_file(self.log_file)
        with self.log_file.open("ab") as out:
            stamp = datetime.now().isoformat(timespec="seconds")
            shown = _abbreviate_classpath(cmd)
            out.write(f"# {stamp} flink-tasks: starting {self.name}:\n# {shown}\n".encode())
            out.flush()
            self._popen = _DetachedPopen(
                list(cmd),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pid = self._popen.pid
        ticks = _proc_start_ticks(pid)
        self.pid_file.write_text(f"{pid} {ticks if ticks is not None else '-'}\n")
        log.info("%s started, pid %d, log %s", self.name, pid, self.log_file)
        return pid

    def check_alive(self, what: str = "start-up") -> None:
        """Raise StartupError with the log's tail if the process has died."""
        if self.is_running():
            return
        code = self._popen.poll() if self._popen is not None else None
        detail = f" with exit code {code}" if code is not None else ""
        raise StartupError(
            f"{self.name} exited during {what}{detail}",
            log_file=self.log_file,
            log_tail=tail(self.log_file),
        )

    def stop(self, grace: float = 20.0, *, kill: bool = False) -> bool:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds (at once if ``kill``).

        Returns True if a process was running.
        """
        rec = self.read_pid()
        if rec is None or not rec.alive():
            self._reap()
            self.pid_file.unlink(missing_ok=True)
            return False
        sig = signal.SIGKILL if kill else signal.SIGTERM
        log.info("stopping %s (pid %d) with %s", self.name, rec.pid, sig.name)
        _signal_group(rec.pid, sig)
        if not self._wait_gone(rec, grace if not kill else 10.0) and not kill:
            log.warning("%s (pid %d) still alive after %.0fs; SIGKILL", self.name, rec.pid, grace)
            _signal_group(rec.pid, signal.SIGKILL)
            self._wait_gone(rec, 10.0)
        # children that outlived the leader (same process group) get the same treatment
        _signal_group(rec.pid, signal.SIGKILL)
        self._reap()
        self.pid_file.unlink(missing_ok=True)
        return True

    def _wait_gone(self, rec: PidRecord, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._reap()
            if not rec.alive():
                return True
            time.sleep(0.1)
        return not rec.alive()

    def _reap(self) -> None:
        if self._popen is not None:
            with contextlib.suppress(Exception):
                self._popen.poll()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session: the pid is the process group id
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _abbreviate_classpath(cmd: Sequence[str]) -> str:
    parts = list(cmd)
    for i, part in enumerate(parts[:-1]):
        if part in ("-cp", "-classpath"):
            entries = parts[i + 1].split(os.pathsep)
            parts[i + 1] = f"{entries[0]}:<{len(entries) - 1} more jars>"
    return " ".join(parts)


def rotate_log_file(log_file: Path) -> None:
    """Keep one previous log (``<name>.1``) so a person can read the run before this one."""
    if log_file.exists() and log_file.stat().st_size > 0:
        log_file.replace(log_file.with_name(log_file.name + ".1"))
