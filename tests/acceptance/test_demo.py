"""`make demo` (`python -m examples.demo`) as a newcomer runs it, on a runtime of its own: every
example is right, the last line is the README's `multiply.send(3, 2) -> 6`, and nothing is logged
at ERROR and no traceback is printed on the way, the stop included (issue 17)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy._ports import free_ports

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
@pytest.mark.slow  # ~30 s on an idle 2-core machine (10,000-task example included), ~95 s when busy
def test_demo_ends_with_the_readme_line_and_no_error(tmp_path: Path) -> None:
    kafka, controller, rest, worker = free_ports(4)
    env = {
        **os.environ,
        "FLINK_TASKS_RUNTIME_DIR": str(tmp_path / "runtime"),
        "FLINK_TASKS_KAFKA_PORT": str(kafka),
        "FLINK_TASKS_KAFKA_CONTROLLER_PORT": str(controller),
        "FLINK_TASKS_REST_PORT": str(rest),
        "FLINK_TASKS_WORKER_PORT": str(worker),
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=240,
        check=False,
    )
    output = proc.stdout
    assert proc.returncode == 0, output
    lines = output.rstrip("\n").splitlines()
    assert lines[-1] == "multiply.send(3, 2) -> 6", output
    assert "UNEXPECTED" not in output
    assert [line for line in lines if "ERROR" in line or "Traceback" in line] == [], output
    # and it stopped what it started
    assert not (tmp_path / "runtime" / "kafka.pid").exists()
    assert not (tmp_path / "runtime" / "statefun.pid").exists()
