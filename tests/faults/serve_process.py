"""`flink-tasks serve MODULE:ATTR --workers N` in a process group of its own, as users run it:
started, killed with SIGKILL (supervisor and workers), stopped, restarted on the same port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from flink_tasks.runtime.process import port_is_free

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ServeProcess:
    """The same interface as `harness.WorkerProcess`, for `flink-tasks serve`."""

    def __init__(
        self,
        target: str,
        port: int,
        log_file: Path,
        *,
        workers: int = 2,
        args: tuple[str, ...] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.target, self.host, self.port = target, host, port
        self.workers, self.args = workers, args
        self.log_file = log_file
        self.env: dict[str, str] = {}
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None and self.popen.poll() is None else None

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait until /healthz answers; returns the seconds it took."""
        assert self.pid is None, "already running"
        started = time.monotonic()
        while not port_is_free(self.port) and time.monotonic() < started + 10:
            time.sleep(0.1)
        command = [sys.executable, "-m", "flink_tasks", "serve", self.target]
        command += ["--host", self.host, "--port", str(self.port)]
        command += ["--workers", str(self.workers), *self.args]
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            self.popen = subprocess.Popen(
                command,
                cwd=PROJECT_ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        while True:
            if self.popen.poll() is not None:
                code = self.popen.returncode
                raise RuntimeError(f"serve exited with {code}; see {self.log_file}")
            with contextlib.suppress(OSError, ValueError):
                if self.get("/healthz")["status"] == "ok":
                    return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"no /healthz from serve in {timeout}s; see {self.log_file}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL to the whole process group: the supervisor and every worker process."""
        assert self.popen is not None and self.popen.poll() is None, "not running"
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        self._wait_port_free()

    def stop(self) -> None:
        """SIGTERM (SIGKILL to the group after 20 s); idempotent."""
        if self.popen is None or self.popen.poll() is not None:
            return
        os.kill(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def _wait_port_free(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not port_is_free(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            body = resp.read().decode()
        return json.loads(body) if path != "/metrics" else body
