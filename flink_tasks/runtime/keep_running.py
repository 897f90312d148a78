"""Run a command again whenever it exits, as Kubernetes restarts a pod's container: each
TaskManager of the cluster mode runs under it (``python -m flink_tasks.runtime.keep_running --
java ... TaskManagerRunner``).

A TaskManager exits by itself when a task of it does not finish cancelling within
``task.cancellation.timeout``: after a failover, a StateFun task whose checkpoint is still logging
the feedback loop waits for a barrier that never comes back, and Flink then ends the whole JVM.
On Kubernetes the pod restarts; here this loop does it, so the job gets its slots back.

SIGTERM (or SIGINT) stops the loop and the command (the launcher signals the process group).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import datetime
from types import FrameType

#: first wait before a start again; doubled while the command keeps dying young
FIRST_DELAY = 1.0
MAX_DELAY = 30.0
#: a run this long resets the wait to FIRST_DELAY
HEALTHY_AFTER = 60.0


def next_delay(previous: float | None, ran_seconds: float) -> float:
    if previous is None or ran_seconds >= HEALTHY_AFTER:
        return FIRST_DELAY
    return min(previous * 2, MAX_DELAY)


def main(argv: list[str] | None = None) -> int:
    command = list(sys.argv[1:] if argv is None else argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("usage: python -m flink_tasks.runtime.keep_running -- COMMAND...", file=sys.stderr)
        return 2
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    delay: float | None = None
    while not stopping:
        started = time.monotonic()
        child = subprocess.Popen(command)  # its output goes where ours goes (the log file)
        code = child.wait()
        if stopping:
            break
        ran = time.monotonic() - started
        delay = next_delay(delay, ran)
        stamp = datetime.now().isoformat(timespec="seconds")
        print(
            f"# {stamp} flink-tasks: the process exited with {code} after {ran:.0f}s; "
            f"starting it again in {delay:.0f}s",
            flush=True,
        )
        deadline = time.monotonic() + delay
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
