"""The client's CLI (``flink-tasks submit|status|result|pause|unpause|cancel|watch``), run in a
subprocess against the real runtime, whose worker (the ``local_env`` fixture) runs in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import re
import struct
import sys
import termios
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from flink_tasks_client import FlinkTasksClient

from flink_tasks.testing import PipelineEnvironment
from tests import pipelines as t

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07|[()][A-Z0-9])")

# GATE: tasks at it finish when the test opens it (the worker runs in the test's process)
USER_MODULE = '''
"""Pipelines a user would keep in their own module."""
from flink_tasks import in_parallel
from tests import pipelines as t

GATE = "{gate}"


def slow_fan_out():
    return in_parallel(
        [t.at_gate.send(GATE, i) for i in range(20)], max_parallelism=4
    ).continue_with(t.make_list)


def slow():
    return t.at_gate.send(GATE, "slept").continue_with(t.echo).finally_do(t.give_none)


def failing():
    return t.sleep_async.send(0.5, "broken").continue_with(t.fail)


not_a_pipeline = 42
'''


class Cli:
    """Runs ``python -m flink_tasks ...`` with the connection options of the local runtime."""

    def __init__(self, client: FlinkTasksClient, module_dir: Path, gate: str) -> None:
        self.gate = t.gate(gate)
        s = client.settings
        self.options = [
            "--bootstrap-servers",
            s.bootstrap_servers,
            "--request-topic",
            s.request_topic,
            "--action-topic",
            s.action_topic,
            "--reply-topic",
            s.reply_topic,
            "--events-topic",
            s.events_topic,
        ]
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join([str(module_dir), str(ROOT)])
        self.env.pop("FLINK_TASKS_BOOTSTRAP_SERVERS", None)

    def argv(self, command: str, *args: str) -> list[str]:
        return [sys.executable, "-m", "flink_tasks", command, *args, *self.options]

    async def run(self, command: str, *args: str, timeout: float = 60) -> tuple[int, str, str]:
        """Exit code, stdout, stderr. Never blocks the event loop the worker runs on."""
        proc = await asyncio.create_subprocess_exec(
            *self.argv(command, *args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            cwd=ROOT,
            env=self.env,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def run_opening_gate(
        self, command: str, *args: str, marker: str, timeout: float = 60
    ) -> tuple[int, str, str]:
        """Like `run`, and opens the gate once `marker` appears in the output."""
        proc = await asyncio.create_subprocess_exec(
            *self.argv(command, *args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            cwd=ROOT,
            env=self.env,
        )
        assert proc.stdout is not None and proc.stderr is not None
        errors = asyncio.ensure_future(proc.stderr.read())
        lines: list[str] = []

        async def follow() -> None:
            assert proc.stdout is not None
            while line := (await proc.stdout.readline()).decode():
                lines.append(line)
                if marker in line:
                    self.gate.set()
            await proc.wait()

        try:
            await asyncio.wait_for(follow(), timeout)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        return proc.returncode, "".join(lines), (await errors).decode()

    async def run_in_pty(
        self, command: str, *args: str, timeout: float = 60, open_gate_at: str | None = None
    ) -> tuple[int, str]:
        """Exit code and the raw terminal output, run under a pseudo-terminal (120x40); opens
        the gate once `open_gate_at` appears in the output."""
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = dict(self.env, TERM="xterm-256color", COLUMNS="120", LINES="40")
        for name in ("NO_COLOR", "TERM_PROGRAM", "FORCE_COLOR"):
            env.pop(name, None)
        chunks: list[bytes] = []

        def read_all() -> None:
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO once the child has closed the terminal
                    return
                if not data:
                    return
                chunks.append(data)
                text = b"".join(chunks).decode("utf-8", "replace")
                if open_gate_at and open_gate_at in ANSI.sub("", text):
                    self.gate.set()

        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv(command, *args),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(slave)
        reader = asyncio.ensure_future(asyncio.to_thread(read_all))
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
            await asyncio.wait_for(reader, 10)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            with contextlib.suppress(OSError):
                os.close(master)
        return code, b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def cli(local_env: PipelineEnvironment, tmp_path: Path) -> Cli:
    gate = uuid.uuid4().hex
    (tmp_path / "user_pipelines.py").write_text(textwrap.dedent(USER_MODULE.format(gate=gate)))
    client = local_env.client
    assert isinstance(client, FlinkTasksClient)
    return Cli(client, tmp_path, gate)


async def _status_becomes(cli: Cli, pipeline_id: str, wanted: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code, out, err = await cli.run("status", pipeline_id)
        assert code == 0, err
        if out.strip() == wanted:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{pipeline_id} is {out.strip()}, never {wanted}")
        await asyncio.sleep(0.2)


@pytest.mark.parametrize(
    ("spec", "printed"),
    [
        ("examples.seed:fan_in", "13.0"),
        ("examples.seed:continuation", "3.0"),
        ("examples.seed:nested", "9.5"),
        ("examples.seed:error_handling", '"handled builtins.ValueError"'),
        ("examples.seed:composition", "50"),
    ],
)
async def test_submit_prints_the_result(cli: Cli, spec: str, printed: str) -> None:
    code, out, err = await cli.run("submit", spec)
    assert (code, out.strip()) == (0, printed), err
    assert "submitted pipeline" in err


async def test_submit_a_failing_pipeline(cli: Cli) -> None:
    code, out, err = await cli.run("submit", "tests.pipelines:fail.send")
    assert code == 1
    assert out == ""
    assert "failed: builtins.ValueError: boom" in err
    code, _, err = await cli.run("submit", "tests.pipelines:fail.send", "--timeout", "30s")
    assert code == 1
    assert "Traceback" not in err
    code, _, err = await cli.run("-v", "submit", "tests.pipelines:fail.send")
    assert code == 1
    assert "Traceback (most recent call last)" in err  # -v shows the remote stack trace


async def test_no_wait_then_status_and_result(cli: Cli) -> None:
    code, out, err = await cli.run("submit", "examples.seed:fan_out", "--no-wait", "--id", "cli-1")
    assert (code, out.strip()) == (0, "cli-1"), err
    await _status_becomes(cli, "cli-1", "COMPLETED")
    code, out, err = await cli.run("result", "cli-1")
    assert (code, out.strip()) == (0, "[6, 20]"), err


async def test_cancel_pause_and_unpause(cli: Cli) -> None:
    code, out, err = await cli.run("submit", "user_pipelines:slow", "--no-wait")
    assert code == 0, err
    pipeline_id = out.strip()
    await _status_becomes(cli, pipeline_id, "RUNNING")
    code, out, err = await cli.run("pause", pipeline_id)
    assert (code, out.strip()) == (0, "PAUSED"), err
    code, out, err = await cli.run("unpause", pipeline_id)
    assert (code, out.strip()) == (0, "RUNNING"), err
    code, out, err = await cli.run("cancel", pipeline_id)
    assert code == 0, err
    assert out.strip() == "CANCELLING"  # until its finally_do has run
    await _status_becomes(cli, pipeline_id, "CANCELLED")
    cli.gate.set()  # the cancelled task ends; its result is ignored
    code, out, err = await cli.run("result", pipeline_id)
    assert code == 1
    assert "was cancelled" in err
    code, out, err = await cli.run("cancel", pipeline_id)
    assert code == 1
    assert "refused" in err and "has finished" in err


async def test_unknown_ids(cli: Cli) -> None:
    code, out, _ = await cli.run("status", "no-such-pipeline")
    assert (code, out.strip()) == (0, "PENDING")
    code, out, err = await cli.run("result", "no-such-pipeline")
    assert code == 1
    assert out == ""
    assert "no-such-pipeline" in err


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("examples.seed", "expected MODULE:PIPELINE"),
        ("no_such_module:thing", "cannot import 'no_such_module'"),
        ("examples.seed:no_such_thing", "has no attribute 'no_such_thing'"),
        ("user_pipelines:not_a_pipeline", "not a pipeline"),
        ("examples.seed:multiply", "must take no arguments"),
    ],
)
async def test_bad_pipeline_specs_are_usage_errors(cli: Cli, spec: str, message: str) -> None:
    code, out, err = await cli.run("submit", spec)
    assert code == 2
    assert message in err
    assert out == ""


async def test_a_broker_that_is_down(cli: Cli) -> None:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flink_tasks",
        "status",
        "x",
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--connect-timeout",
        "1s",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=cli.env,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "cannot reach Kafka at 127.0.0.1:1" in err.decode()
    assert time.monotonic() - started < 15


async def test_watch_without_a_terminal_prints_plain_lines(cli: Cli) -> None:
    code, out, err = await cli.run("submit", "user_pipelines:slow_fan_out", "--no-wait")
    assert code == 0, err
    pipeline_id = out.strip()
    # the tasks wait until watch has seen the pipeline running, so it sees every event after
    code, out, err = await cli.run_opening_gate("watch", pipeline_id, marker="RUNNING")
    assert code == 0, err
    assert "\x1b[" not in out  # no escape codes in a pipe
    assert "status COMPLETED" in out
    assert re.search(r"status\s+COMPLETED", out)
    assert re.search(r"20/20", out), out  # the fan-out's progress bar, complete
    assert "[0, 1, 2, 3" in out  # the result


async def test_watch_a_finished_and_an_unknown_pipeline(cli: Cli) -> None:
    code, out, err = await cli.run("submit", "examples.seed:fan_in", "--id", "cli-watch-done")
    assert code == 0, err
    code, out, err = await cli.run("watch", "cli-watch-done")
    assert code == 0, err
    assert re.search(r"status\s+COMPLETED", out)
    assert "13.0" in out
    code, out, err = await cli.run("watch", "cli-watch-never", "--timeout", "2s")
    assert code == 2
    assert "waiting for it to start" in out
    assert "timed out" in out


async def test_watch_a_failing_pipeline(cli: Cli) -> None:
    code, out, err = await cli.run("submit", "user_pipelines:failing", "--watch")
    assert code == 1, err
    assert re.search(r"status\s+FAILED", out)
    assert "builtins.ValueError: broken" in out


async def test_watch_in_a_terminal_shows_a_live_view(cli: Cli) -> None:
    code, raw = await cli.run_in_pty("submit", "examples.seed:limited", "--watch")
    assert code == 0, raw
    assert "\x1b[" in raw  # drawn live with escape codes
    text = ANSI.sub("", raw)
    assert re.search(r"status\s+COMPLETED", text), text
    assert "50/50" in text
    assert "━" in text  # a progress bar

    code, out, err = await cli.run("submit", "user_pipelines:slow_fan_out", "--no-wait")
    assert code == 0, err
    code, raw = await cli.run_in_pty("watch", out.strip(), open_gate_at="RUNNING")
    assert code == 0, raw
    text = ANSI.sub("", raw)
    assert re.search(r"status\s+COMPLETED", text), text
    assert "20/20" in text
