"""`task.send(...)` is checked against the task's signature by mypy (ParamSpec)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SNIPPET = textwrap.dedent(
    """
    from typing import Any
    from flink_tasks import FlinkTasks

    tasks = FlinkTasks()

    @tasks.bind()
    def multiply(x: int, y: int) -> int:
        return x * y

    @tasks.bind(with_state=True)
    def add_state(state: Any, x: int) -> tuple[Any, int]:
        return state, x

    multiply.send(3, 2)
    add_state.send(1)
    multiply.send("three", 2)  # line 17: wrong type
    multiply.send(1, 2, 3)     # line 18: too many arguments
    add_state.send(1, 2)       # line 19: the state is not passed by the caller
    """
)


def test_wrong_calls_to_send_are_type_errors(tmp_path: Path) -> None:
    source = tmp_path / "pipelines_under_check.py"
    source.write_text(SNIPPET)
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    lines = sorted({int(line.split(":")[1]) for line in errors})
    assert lines == [17, 18, 19], run.stdout
    assert 'incompatible type "str"; expected "int"' in run.stdout
