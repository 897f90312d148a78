"""`flink-tasks serve`: one process and several behind one port; graceful stop on SIGTERM."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from flink_tasks.runtime.workers import WorkerProcesses
from tests.deploy._ports import free_ports

ROOT = Path(__file__).resolve().parents[2]


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read()


def test_serve_one_process_until_sigterm(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    workers = WorkerProcesses(
        "examples.seed:tasks", port=port, log_file=tmp_path / "serve.log", cwd=ROOT
    ).start()
    try:
        status, body = get(f"{workers.url}/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        status, body = get(f"{workers.url}/metrics")
        assert status == 200
    finally:
        code = workers.stop()
    assert code == 0
    log = (tmp_path / "serve.log").read_text()
    assert "serving" in log and "stopping" in log


@pytest.mark.skipif(sys.platform != "linux", reason="--workers > 1 needs SO_REUSEPORT (Linux)")
def test_serve_several_processes_share_one_port(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    with WorkerProcesses(
        "examples.seed:tasks", port=port, workers=2, log_file=tmp_path / "serve.log", cwd=ROOT
    ) as workers:
        pids = workers.worker_pids()
        assert len(pids) == 2
        assert get(f"{workers.url}/healthz")[0] == 200
        supervisor = workers.proc
        assert supervisor is not None
    assert supervisor.returncode == 0
    log = (tmp_path / "serve.log").read_text()
    assert "all workers stopped" in log
    # the supervisor's prometheus multiprocess folder is gone with it
    metrics_dir = Path(log.split("metrics of all in ", 1)[1].split()[0])
    assert metrics_dir.name.startswith("flink-tasks-metrics-") and not metrics_dir.exists()
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


def test_serve_rejects_a_bad_target() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flink_tasks", "serve", "examples.seed:nothing_here", "--port", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 1
    assert "nothing_here" in result.stderr
