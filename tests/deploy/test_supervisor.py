"""`flink-tasks serve --workers N`: the supervisor never gives up on its worker processes.

Real processes: worker processes that crash at start (more often than the old limit of 5) and
workers SIGKILLed by pid are started again after a bounded exponential back-off, and serve as
soon as the cause is gone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest

from flink_tasks.cli import main as cli_main
from flink_tasks.worker.serve import RestartBackoff
from tests.deploy._ports import free_ports
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="--workers > 1 needs SO_REUSEPORT (Linux)"
)

# The supervisor with a quick back-off (0.1 s doubling to 0.4 s), so a test sees many restarts.
SUPERVISOR = """
import logging, sys
from datetime import timedelta
from flink_tasks.worker.serve import RestartBackoff, ServeOptions, Supervisor
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
options = ServeOptions(
    target="tests.deploy.crashing_worker:tasks", port=int(sys.argv[1]), workers=2,
    env={"FLINK_TASKS_TEST_CRASH_FILE": sys.argv[2]},
)
backoff = RestartBackoff(
    initial=timedelta(seconds=0.1), maximum=timedelta(seconds=0.4),
    healthy_after=timedelta(seconds=30),
)
sys.exit(Supervisor(options, backoff).run())
"""


def test_restart_backoff_doubles_up_to_its_maximum() -> None:
    backoff = RestartBackoff()
    assert [backoff.delay(n) for n in range(8)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert backoff.delay(10_000) == 30.0
    custom = RestartBackoff(
        initial=timedelta(seconds=1), maximum=timedelta(seconds=5), multiplier=3
    )
    assert [custom.delay(n) for n in range(5)] == [0.0, 1.0, 3.0, 5.0, 5.0]


def stop_gracefully(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the supervisor (its process group is SIGKILLed if it takes over 30 s)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def children(pid: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def test_supervisor_keeps_restarting_workers_that_keep_dying(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    crash_file = tmp_path / "crash"
    crash_file.touch()
    log_file = tmp_path / "supervisor.log"
    with log_file.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SUPERVISOR, str(port), str(crash_file)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log() -> str:
        return log_file.read_text()

    def crashes() -> int:
        return len(re.findall(r"exited with code 3 after", log()))

    try:
        # far more quick exits than the old supervisor's limit of 5 ("giving up")
        wait_until(lambda: crashes() >= 12, 60, "12 crashed worker starts")
        assert proc.poll() is None, log()
        delays = [float(d) for d in re.findall(r"starting it again in ([0-9.]+) s", log())]
        assert {0.1, 0.2, 0.4} <= set(delays), delays
        assert max(delays) == 0.4  # bounded
        assert "giving up" not in log()
        # the cause goes away: both slots serve again, without any help
        crash_file.unlink()
        wait_until(lambda: healthy(port) and len(children(proc.pid)) == 2, 30, "2 workers")
        # a worker killed by signal is reported as such and replaced
        victim = min(children(proc.pid))
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: victim not in children(proc.pid) and len(children(proc.pid)) == 2,
            30,
            "a new worker in place of the killed one",
        )
        wait_until(lambda: healthy(port), 30, "/healthz after the replacement")
        assert re.search(
            rf"\(pid {victim}\) was killed by SIGKILL after [0-9.]+ s; starting", log()
        )
        assert proc.poll() is None
    finally:
        stop_gracefully(proc)
    assert proc.returncode == 0, log()
    assert "all workers stopped" in log()


def descendants(pid: int) -> set[int]:
    """Children of every thread, and theirs (the pool's fork server and its children)."""
    found, todo = set(), [pid]
    while todo:
        for thread in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                kids = {int(p) for p in (thread / "children").read_text().split()}
            except OSError:
                continue
            found |= kids
            todo += kids
    return found


def test_a_worker_that_stops_beating_is_killed_and_replaced(tmp_path: Path) -> None:
    """SIGSTOP one worker process: the supervisor kills it after --worker-timeout (its pool
    children go with it) and starts another. A registry whose import takes longer than the
    timeout, and than the wait for a new process's first heartbeat, is not taken for a frozen
    worker: its process beats while it imports."""
    (port,) = free_ports(1)
    log_file = tmp_path / "serve.log"
    env = {**os.environ, "FLINK_TASKS_TEST_IMPORT_DELAY": "12"}
    command = [
        sys.executable,
        "-m",
        "flink_tasks",
        "serve",
        "tests.deploy.slow_import_worker:tasks",
    ]
    command += ["--port", str(port), "--workers", "2", "--pool-size", "1", "--worker-timeout", "2s"]
    with log_file.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log() -> str:
        return log_file.read_text()

    try:
        wait_until(lambda: healthy(port) and len(children(proc.pid)) == 2, 90, "2 workers")
        assert "sent no heartbeat" not in log()  # slow imports, and nothing was killed
        first, second = sorted(children(proc.pid))
        # the pool's fork server and its one child
        wait_until(lambda: len(descendants(first)) >= 2, 30, "the pool child of a worker")
        family = {first} | descendants(first)
        os.kill(first, signal.SIGSTOP)
        wait_until(
            lambda: first not in children(proc.pid) and len(children(proc.pid)) == 2,
            30,
            "a new worker in place of the stopped one",
        )
        assert re.search(rf"worker \d \(pid {first}\) sent no heartbeat for [0-9.]+ s", log())
        assert re.search(rf"\(pid {first}\) was killed by SIGKILL after", log())
        wait_until(
            lambda: not any(Path(f"/proc/{p}").exists() for p in family),
            30,
            f"the stopped worker and its pool children {family} gone",
        )
        assert second in children(proc.pid)
        wait_until(lambda: healthy(port), 30, "/healthz after the replacement")
        assert proc.poll() is None
    finally:
        stop_gracefully(proc)
    assert proc.returncode == 0, log()
    assert log().count("sent no heartbeat") == 1, log()


def test_serve_refuses_a_worker_timeout_shorter_than_a_few_heartbeats(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli_main(["serve", "tests.deploy.crashing_worker:tasks", "--worker-timeout", "1s"]) == 2
    assert "--worker-timeout must be 0 or at least 2s" in capsys.readouterr().err
