"""Tasks served by the fault-injection suite's worker process (`tests.faults.worker_main`).

Tasks that the suite wants to count record each execution (one line per run of the body) in
the file named by `$FLINK_TASKS_FAULTS_EXEC_LOG`, so a test can see how often bodies ran even
across a SIGKILL of the worker (at-least-once) without trusting in-memory counters.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Any

from flink_tasks import FlinkTasks, RetryPolicy, TaskException

tasks = FlinkTasks(default_timeout=timedelta(seconds=60))

_EXEC_LOG_FD: int | None = None


def record_run(kind: str, key: Any) -> None:
    global _EXEC_LOG_FD
    path = os.environ.get("FLINK_TASKS_FAULTS_EXEC_LOG")
    if not path:
        return
    if _EXEC_LOG_FD is None:
        _EXEC_LOG_FD = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    # O_APPEND: one atomic line per write; the pid tells which worker process ran it
    os.write(_EXEC_LOG_FD, f"{kind} {key} {os.getpid()}\n".encode())


@tasks.bind()
async def square(x: int, delay: float = 0.0, tag: str = "") -> int:
    """x², after `delay` seconds; records the run under `tag:x`."""
    record_run("square", f"{tag}:{x}")
    if delay:
        await asyncio.sleep(delay)
    return x * x


@tasks.bind()
def total(values: list[int]) -> int:
    return sum(values)


@tasks.bind(with_state=True)
async def step(state: Any, value: int, label: str, delay: float = 0.0) -> tuple[Any, int]:
    """Appends `label` to the state (a list) and returns value + 1: a duplicated application of
    a result would show up as a repeated label or a wrong count."""
    record_run("step", label)
    if delay:
        await asyncio.sleep(delay)
    return [*(state or []), label], value + 1


@tasks.bind(with_state=True)
def read_state(state: Any, value: Any) -> tuple[Any, Any]:
    return state, {"value": value, "state": state}


@tasks.bind()
async def ident(i: int) -> int:
    return i


@tasks.bind()
def count(values: list[int]) -> list[int]:
    """(number of values, sum): the fan-in check of the load test."""
    return [len(values), sum(values)]


# ---- task-level faults


@tasks.bind(timeout=timedelta(seconds=1))
async def hang(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "finished"


@tasks.bind(
    timeout=timedelta(seconds=1),
    retry_policy=RetryPolicy(retry_for=[TimeoutError], max_retries=2),
)
async def hang_retried(seconds: float) -> str:
    record_run("hang_retried", seconds)
    await asyncio.sleep(seconds)
    return "finished"


@tasks.bind()
def describe_error(ex: TaskException, *args: Any) -> Any:
    return ["recovered", ex.exception_type, ex.exception_message, *args]


@tasks.bind()
async def slow(seconds: float, value: Any) -> Any:
    await asyncio.sleep(seconds)
    return value


@tasks.bind()
def big_result(size: int) -> str:
    return "x" * size


@tasks.bind()
def unserializable_result() -> Any:
    return object()


@tasks.bind()
def recurse(depth: int, target: int) -> Any:
    if depth >= target:
        return depth
    return recurse.send(depth + 1, target)


# ---- pickle: refused unless the task opts in


@tasks.bind()
def safe_echo(value: Any) -> Any:
    return repr(value)


@tasks.bind(allow_pickle=True)
def pickle_echo(value: Any) -> Any:
    return repr(value)


@tasks.bind()
def count_len(values: list[Any]) -> int:
    return sum(len(v) for v in values)


# ---- values and ids (test_09)


def nested(depth: int) -> Any:
    """A dict nested `depth` levels deep."""
    value: Any = depth
    for _ in range(depth):
        value = {"k": value}
    return value


@tasks.bind()
def deep_result(depth: int) -> Any:
    return nested(depth)


@tasks.bind(timeout=timedelta(minutes=2))
async def wait_for_file(path: str, value: Any) -> Any:
    """Returns `value` once `path` exists: a test's signal to the worker process."""
    while not os.path.exists(path):
        await asyncio.sleep(0.05)
    return value


@tasks.bind()
def spawn_until_file(path: str, value: Any) -> Any:
    """An orchestrator whose child runs until the test creates `path`."""
    return wait_for_file.send(path, value)


@tasks.bind()
def spawn_slow(seconds: float, value: Any) -> Any:
    """An orchestrator whose child (at `<root>:<random>`) runs `slow` for `seconds`."""
    return slow.send(seconds, value)
