"""keep_running (the cluster mode's TaskManager keeper): a command that exits is started again,
with a wait that grows while it keeps dying young; SIGTERM stops the loop and the command."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from flink_tasks.runtime.keep_running import FIRST_DELAY, HEALTHY_AFTER, MAX_DELAY, next_delay


def test_the_wait_doubles_while_the_command_dies_young_and_resets_after_a_healthy_run() -> None:
    assert next_delay(None, 0.5) == FIRST_DELAY
    assert next_delay(FIRST_DELAY, 0.5) == 2 * FIRST_DELAY
    assert next_delay(MAX_DELAY, 0.5) == MAX_DELAY
    assert next_delay(16.0, HEALTHY_AFTER) == FIRST_DELAY


def wait_for(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_an_exiting_command_starts_again_and_sigterm_stops_both(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    pid_file = tmp_path / "pid"
    # the first run exits at once; the second one stays up, writing its pid
    script = (
        "import os, sys, time, pathlib\n"
        f"p = pathlib.Path({str(starts)!r}); n = len(p.read_text()) if p.exists() else 0\n"
        "p.write_text('x' * (n + 1))\n"
        "if n == 0: sys.exit(3)\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    keeper = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flink_tasks.runtime.keep_running",
            "--",
            sys.executable,
            "-c",
            script,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(pid_file.exists, timeout=30)
        assert starts.read_text() == "xx"
        child = int(pid_file.read_text())
        keeper.send_signal(signal.SIGTERM)
        assert keeper.wait(timeout=30) == 0
        wait_for(lambda: not Path(f"/proc/{child}").exists() or _zombie(child), timeout=30)
        out = keeper.stdout.read() if keeper.stdout else ""
        assert "the process exited with 3" in out
        assert starts.read_text() == "xx"  # not started a third time
    finally:
        if keeper.poll() is None:
            keeper.kill()
            keeper.wait()
        if keeper.stdout:
            keeper.stdout.close()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
