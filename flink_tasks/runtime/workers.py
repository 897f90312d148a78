"""Worker processes for the local runtime: ``flink-tasks serve --workers N`` started and stopped
from Python (tests, scripts), N processes behind one port (SO_REUSEPORT, Linux).

    with WorkerProcesses("examples.seed:tasks", port=18000, workers=2) as workers:
        ...  # start LocalRuntime(settings) now: StateFun's first call blocks until a worker answers
        print(workers.worker_pids())
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from flink_tasks.runtime.errors import StartupError


class WorkerProcesses:
    """``flink-tasks serve TARGET --workers N`` as a child process group on ``host:port``;
    `log_format` ``"json"`` writes one JSON object a line to `log_file`."""

    def __init__(
        self,
        target: str,
        *,
        host: str = "127.0.0.1",
        port: int = 18000,
        workers: int = 1,
        log_file: Path | None = None,
        cwd: Path | None = None,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        log_format: str = "text",
    ) -> None:
        self.target = target
        self.host = host
        self.port = port
        self.workers = workers
        self.log_file = log_file
        self.cwd = cwd
        self.extra_args = extra_args
        self.env = env
        self.log_format = log_format
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "flink_tasks",
            "serve",
            self.target,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--log-format",
            self.log_format,
            *self.extra_args,
        ]

    def start(self, timeout: float = 60.0) -> WorkerProcesses:
        """Start and wait until every worker process answers ``/healthz``."""
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,
            )
        finally:
            if self.log_file:
                out.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartupError(
                    f"flink-tasks serve exited with {self.proc.returncode} (log: {self.log_file})"
                )
            if self._healthy() and len(self.worker_pids()) >= self.workers:
                return self
            time.sleep(0.2)
        self.stop()
        raise StartupError(f"workers on {self.url} not ready within {timeout:g} s")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def worker_pids(self) -> set[int]:
        """Pids of the processes that serve (the supervisor's children, or the one process)."""
        if self.proc is None or self.proc.poll() is not None:
            return set()
        if self.workers == 1:
            return {self.proc.pid}
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return {int(p) for p in children.read_text().split()}
        except OSError:
            return set()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful), SIGKILL to the group after ``timeout``; the exit code."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def __enter__(self) -> WorkerProcesses:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
