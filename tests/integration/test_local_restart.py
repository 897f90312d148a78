"""`flink-tasks local down`, then `local up` again in the same run dir, as a user does between
two working days, every step a CLI command in its own process:

- `up` goes on from the newest retained checkpoint: a pipeline finished before `down` still has
  its result, and its task body does not run again;
- `up` is ready while no worker runs yet, even though a pipeline submitted while the worker was
  stopped holds the job back (its call, re-read or restored, waits for the worker: no
  checkpoint, and a restored call keeps the task INITIALIZING); it finishes once `serve` starts;
- `up --fresh` starts without the retained state;
- a run dir keeps the checkpoints of the newest job that has one, not of every day before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flink_tasks.runtime.local import LocalRuntime
from flink_tasks.runtime.workers import WorkerProcesses
from tests.deploy._ports import isolated_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
TASKS = "tests.integration.restart_tasks"


class Cli:
    """`python -m flink_tasks ...` with the runtime's ports in the environment."""

    def __init__(self, tmp: Path) -> None:
        self.settings = isolated_settings(tmp / "runtime")
        s = self.settings
        self.runs = tmp / "runs"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLINK_TASKS_")}
        self.env.update(
            FLINK_TASKS_RUNTIME_DIR=str(s.run_dir),
            FLINK_TASKS_KAFKA_PORT=str(s.kafka_port),
            FLINK_TASKS_KAFKA_CONTROLLER_PORT=str(s.kafka_controller_port),
            FLINK_TASKS_REST_PORT=str(s.rest_port),
            FLINK_TASKS_JOBMANAGER_RPC_PORT=str(s.jobmanager_rpc_port),
            FLINK_TASKS_WORKER_PORT=str(s.worker_port),
            FLINK_TASKS_BOOTSTRAP_SERVERS=s.bootstrap_servers,
            RESTART_TEST_RUNS=str(self.runs),
        )
        self.serve_log = tmp / "serve.log"
        self.worker: WorkerProcesses | None = None

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flink_tasks", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, timeout: float = 300) -> str:
        proc = self.run(*args, timeout=timeout)
        assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
        return proc.stdout

    def serve(self) -> None:
        self.worker = WorkerProcesses(
            f"{TASKS}:tasks",
            port=self.settings.worker_port,
            log_file=self.serve_log,
            cwd=ROOT,
            env=self.env,
        ).start()

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def recorded_runs(self) -> list[int]:
        return [int(line) for line in self.runs.read_text().split()]


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    cli = Cli(tmp_path)
    try:
        yield cli
    finally:
        cli.stop_worker()
        cli.run("local", "down", "--purge", timeout=120)


def test_local_down_and_up_go_on_from_the_retained_state(cli: Cli) -> None:
    cli.ok("local", "up")
    cli.serve()
    assert json.loads(cli.ok("submit", f"{TASKS}:chain_of_4", "--id", "day-one")) == 50
    # the finished pipeline is in a completed checkpoint
    LocalRuntime.attach(cli.settings).wait_for_checkpoint()

    # a pipeline submitted while no worker runs: its first call waits, and so do checkpoints
    cli.stop_worker()
    late = cli.ok("submit", f"{TASKS}:chain_of_7", "--no-wait").strip()
    # its pending call is in a checkpoint (the function type was called before, so the call
    # waits without holding checkpoints back); restored, it keeps its task INITIALIZING
    LocalRuntime.attach(cli.settings).wait_for_checkpoint()
    cli.ok("local", "down")
    checkpoints = cli.settings.checkpoints_dir
    (day_one_job,) = checkpoints.iterdir()

    # again, before the worker: ready (not held up by the waiting call), restored
    up = cli.run("local", "up", "--timeout", "90s", timeout=200)
    assert up.returncode == 0, up.stderr[-4000:]
    assert "restoring StateFun from" in up.stderr
    url = cli.settings.worker_url
    assert f"waiting for a worker at {url} (tasks 2/3 running" in up.stderr
    assert f"{url} not answering (start: flink-tasks serve MODULE:tasks --port" in up.stdout
    cli.serve()  # the pipeline function runs in the worker too
    # (exit code 3 until the restored call's task runs: StateFun retries it with a back-off)
    assert json.loads(cli.run("local", "status", "--json").stdout)["workers"] == {url: True}
    assert json.loads(cli.ok("result", "day-one")) == 50
    attached = cli.ok("submit", f"{TASKS}:chain_of_7", "--id", late, "--reuse", "attach")
    assert json.loads(attached) == 80
    assert cli.recorded_runs() == [4, 7]  # day-one's body ran once, before `down`

    LocalRuntime.attach(cli.settings).wait_for_checkpoint()  # the restored job's own
    cli.stop_worker()
    cli.ok("local", "down")
    cli.ok("local", "up", "--fresh")
    # day one's checkpoints went once a newer job held one; that job's stay until the new one's
    assert day_one_job.parent == checkpoints and not day_one_job.exists()
    assert len(list(checkpoints.iterdir())) == 2
    cli.serve()
    fresh = cli.run("result", "day-one")
    assert fresh.returncode == 1
    assert "unknown" in fresh.stderr, fresh.stderr


def test_a_restore_may_switch_the_egress_semantic(cli: Cli) -> None:
    """A checkpoint taken with exactly-once output holds the egress's Kafka transactions; the
    job restored from it with the at-least-once egress ends them and goes on, as does the
    switch back."""
    cli.ok("local", "up", "--egress", "exactly-once")
    cli.serve()
    assert json.loads(cli.ok("submit", f"{TASKS}:chain_of_4", "--id", "once")) == 50
    LocalRuntime.attach(cli.settings).wait_for_checkpoint()
    cli.ok("local", "down")

    up = cli.run("local", "up", "--egress", "at-least-once", "--timeout", "90s", timeout=200)
    assert up.returncode == 0, up.stderr[-4000:]
    assert "restoring StateFun from" in up.stderr
    assert json.loads(cli.ok("result", "once")) == 50
    assert json.loads(cli.ok("submit", f"{TASKS}:chain_of_7", "--id", "twice")) == 80
    LocalRuntime.attach(cli.settings).wait_for_checkpoint()
    cli.ok("local", "down")

    up = cli.run("local", "up", "--egress", "exactly-once", "--timeout", "90s", timeout=200)
    assert up.returncode == 0, up.stderr[-4000:]
    assert json.loads(cli.ok("result", "twice")) == 80
    assert json.loads(cli.ok("submit", f"{TASKS}:chain_of_4", "--id", "thrice")) == 50
    status = json.loads(cli.ok("local", "status", "--json"))
    assert status["job"]["state"] == "RUNNING", status
    assert cli.recorded_runs() == [4, 7, 4]
