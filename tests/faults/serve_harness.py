"""The worker as users run it, for the isolation scenarios: ``python -m flink_tasks serve
MODULE:ATTR --workers 2 --pool process`` in a process (and session) of its own, behind an
isolated runtime like every `FaultStack`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flink_tasks.runtime.process import port_is_free
from tests.faults.harness import PROJECT_ROOT, FaultStack, port_block


class ServeProcess:
    """``flink-tasks serve`` (a supervisor and its worker processes), stopped by its own pid."""

    def __init__(
        self,
        target: str,
        port: int,
        log_file: Path,
        egress_topics: tuple[str, ...],
        *,
        workers: int = 2,
        pool: str = "process",
        host: str = "127.0.0.1",
    ) -> None:
        self.target, self.host, self.port = target, host, port
        self.workers, self.pool = workers, pool
        self.egress_topics = egress_topics
        self.log_file = log_file
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None and self.popen.poll() is None else None

    def start(self, timeout: float = 90.0) -> float:
        """Start serve and wait until every worker process serves; returns the seconds it took."""
        assert self.pid is None, "already running"
        started = time.monotonic()
        while not port_is_free(self.port) and time.monotonic() < started + 10:
            time.sleep(0.1)
        env = {
            **os.environ,
            "FLINK_TASKS_EGRESS_TOPICS": ",".join(self.egress_topics),
            "PYTHONUNBUFFERED": "1",
        }
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        cmd = [sys.executable, "-m", "flink_tasks", "serve", self.target]
        cmd += ["--host", self.host, "--port", str(self.port), "--workers", str(self.workers)]
        cmd += ["--pool", self.pool]
        with self.log_file.open("ab") as out:
            self.popen = subprocess.Popen(
                cmd,
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"serve exited with {self.popen.returncode}; see {self.log_file}"
                )
            with self.log_file.open("rb") as fh:
                fh.seek(offset)
                serving = fh.read().count(b" serving ")
            if serving >= self.workers:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"serve did not start within {timeout}s; see {self.log_file}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM to the supervisor (it stops its workers); SIGKILL to the session after 30 s."""
        if self.popen is None or self.popen.poll() is not None:
            return
        os.kill(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            body = resp.read().decode()
        return json.loads(body) if path != "/metrics" else body

    def session_pids(self) -> list[int]:
        """Every live process of serve's session (supervisor, workers, fork servers, children)."""
        if self.popen is None:
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                fields = stat.rsplit(")", 1)[1].split()
                if fields[0] != "Z" and int(fields[3]) == self.popen.pid:  # session id
                    pids.append(int(entry))
        return sorted(pids)


class ServeStack(FaultStack):
    """A `FaultStack` whose worker is ``flink-tasks serve`` in its own process."""

    def __init__(self, tmp: Path, base: int, target: str, **settings: Any) -> None:
        super().__init__(tmp, base, **settings)
        self.worker = ServeProcess(  # type: ignore[assignment]
            target,
            self.settings.worker_port,
            tmp / "serve.log",
            (self.settings.replies_topic, self.settings.events_topic),
        )


@contextlib.contextmanager
def serve_stack(tmp: Path, base: int, target: str, **settings: Any) -> Iterator[ServeStack]:
    stack = ServeStack(tmp, port_block(base), target, **settings)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
