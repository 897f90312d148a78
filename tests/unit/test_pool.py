"""The process pool and the task loop: a crash, a segfault, a hang or a memory blow-up costs one
child (replaced), never the worker; a blocking async task never stops the endpoint's loop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from flink_tasks import RetryPolicy, serialization
from flink_tasks._proto import messages_pb2
from flink_tasks.errors import MemoryLimitError, WorkerLostError
from flink_tasks.registry import Task
from flink_tasks.types import parse_memory_size
from flink_tasks.worker.pool import registry_target
from flink_tasks.worker.task_runner import PoolSettings, TaskRunner
from tests.unit import pool_tasks as pt

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def request(
    task: Task[Any, Any], *args: Any, timeout: float = 0.0, retry: RetryPolicy | None = None
) -> messages_pb2.TaskRequest:
    out = messages_pb2.TaskRequest(
        task_id="t-1", task_type=task.type_name, attempt=1, timeout_s=timeout
    )
    out.args.CopyFrom(serialization.encode_args(list(args)))
    if retry is not None:
        out.retry_policy.CopyFrom(retry.to_proto())
        out.has_retry_policy = True
    return out


def value(result: messages_pb2.TaskResult) -> Any:
    assert result.WhichOneof("outcome") == "result", result.error
    return serialization.decode(result.result)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or during the read
        return False


async def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def runner() -> AsyncIterator[TaskRunner]:
    r = TaskRunner(pt.tasks, pool=PoolSettings(kind="process", size=2))
    await r.start()
    yield r
    await r.aclose()


def pool_pids(runner: TaskRunner) -> list[int]:
    assert runner.process_pool is not None
    return runner.process_pool.pids


async def test_sync_task_runs_in_a_child_process(runner: TaskRunner) -> None:
    assert value(await runner.run(request(pt.add, 2, 3))) == 5
    child = value(await runner.run(request(pt.pid)))
    assert child != os.getpid()
    assert child in pool_pids(runner)


async def test_ordinary_exception_keeps_the_child(runner: TaskRunner) -> None:
    before = pool_pids(runner)
    result = await runner.run(request(pt.fail))
    assert result.error.exception_type == "builtins.ValueError"
    assert result.error.exception_message == "bad value"
    assert pool_pids(runner) == before


@pytest.mark.parametrize(
    ("task", "args", "how"),
    [(pt.exit_hard, (3,), "exited with code 3"), (pt.segfault, (), "killed by signal SIGSEGV")],
)
async def test_dead_child_is_worker_lost_and_replaced(
    runner: TaskRunner, task: Task[Any, Any], args: tuple[Any, ...], how: str
) -> None:
    before = set(pool_pids(runner))
    result = await runner.run(request(task, *args, retry=RetryPolicy(retry_for=[WorkerLostError])))
    assert result.error.exception_type == "flink_tasks.WorkerLostError"
    assert how in result.error.exception_message
    assert result.error.retryable  # retry_for=[WorkerLostError] applies
    await wait_until(lambda: len(pool_pids(runner)) == 2)
    assert len(before - set(pool_pids(runner))) == 1  # exactly the dead child was replaced
    assert value(await runner.run(request(pt.add, 1, 1))) == 2
    assert runner.metrics.value("flink_tasks_pool_children_lost_total", reason="crash") == 1


async def test_not_retryable_without_a_matching_policy(runner: TaskRunner) -> None:
    result = await runner.run(request(pt.exit_hard, 1, retry=RetryPolicy(retry_for=[KeyError])))
    assert result.error.exception_type == "flink_tasks.WorkerLostError"
    assert not result.error.retryable


async def test_hung_task_is_killed_at_its_timeout_and_frees_its_slot() -> None:
    r = TaskRunner(pt.tasks, pool=PoolSettings(kind="process", size=1))
    await r.start()
    try:
        (hung_pid,) = pool_pids(r)
        started = time.monotonic()
        result = await r.run(request(pt.hang, 60, timeout=0.5))
        took = time.monotonic() - started
        assert result.error.exception_type == "flink_tasks.TaskTimeoutError"
        assert "did not finish within 0.5 s" in result.error.exception_message
        assert 0.5 <= took < 3
        await wait_until(lambda: not alive(hung_pid))
        # the only slot is free again: an ordinary task runs at once
        started = time.monotonic()
        assert value(await r.run(request(pt.add, 40, 2))) == 42
        assert time.monotonic() - started < 5
        assert r.metrics.value("flink_tasks_pool_children_lost_total", reason="timeout") == 1
    finally:
        await r.aclose()


async def test_timeout_counts_from_the_start_of_the_body_not_the_queue() -> None:
    r = TaskRunner(pt.tasks, pool=PoolSettings(kind="process", size=1))
    await r.start()
    try:
        first = asyncio.ensure_future(r.run(request(pt.hang, 1.0, timeout=5)))
        await asyncio.sleep(0.1)
        # queued ~0.9 s behind the first, then runs 0.3 s: within its own 0.8 s timeout
        second = await r.run(request(pt.hang, 0.3, timeout=0.8))
        assert value(second) == "woke up"
        assert value(await first) == "woke up"
    finally:
        await r.aclose()


async def test_memory_over_the_limit_is_memory_limit_error(runner: TaskRunner) -> None:
    result = await runner.run(request(pt.hog, 400, retry=RetryPolicy(retry_for=[WorkerLostError])))
    assert result.error.exception_type == "flink_tasks.MemoryLimitError"
    assert "over its memory limit of 150 MiB" in result.error.exception_message
    assert result.error.retryable  # a MemoryLimitError is a WorkerLostError
    assert issubclass(MemoryLimitError, WorkerLostError)
    assert value(await runner.run(request(pt.add, 1, 2))) == 3


async def test_worker_default_memory_limit_applies_to_unlimited_tasks() -> None:
    r = TaskRunner(pt.tasks, pool=PoolSettings(kind="process", size=1, max_memory=120 * 2**20))
    await r.start()
    try:
        result = await r.run(request(pt.allocate, 300))
        assert result.error.exception_type == "flink_tasks.MemoryLimitError"
        assert value(await r.run(request(pt.allocate, 1))) == 2**20
    finally:
        await r.aclose()


async def test_no_child_outlives_close() -> None:
    r = TaskRunner(pt.tasks, pool=PoolSettings(kind="process", size=2))
    await r.start()
    pids = pool_pids(r)
    busy = asyncio.ensure_future(r.run(request(pt.hang, 60, timeout=60)))
    await asyncio.sleep(0.2)
    await r.aclose()
    result = await busy
    assert result.error.exception_type == "flink_tasks.WorkerLostError"
    assert pool_pids(r) == []
    await wait_until(lambda: not any(alive(p) for p in pids))


def test_children_die_with_the_worker_process(tmp_path: Any) -> None:
    script = (
        "import asyncio, sys\n"
        "from flink_tasks.worker.task_runner import PoolSettings, TaskRunner\n"
        "from tests.unit import pool_tasks\n"
        "async def main():\n"
        "    r = TaskRunner(pool_tasks.tasks, pool=PoolSettings(kind='process', size=2))\n"
        "    await r.start()\n"
        "    print(*r.process_pool.pids, flush=True)\n"
        "    await asyncio.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n"
    )
    path = tmp_path / "pool_parent.py"
    path.write_text(script)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([PROJECT_ROOT, *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, str(path)], stdout=subprocess.PIPE, text=True, env=env, cwd=PROJECT_ROOT
    )
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids):
        assert time.monotonic() < deadline, "pool children outlived their SIGKILLed parent"
        time.sleep(0.05)


async def test_blocking_async_task_cannot_stop_the_callers_loop() -> None:
    r = TaskRunner(pt.tasks)  # thread pool: async bodies use the task loop in any pool
    try:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.ensure_future(tick())
        started = time.monotonic()
        result = await r.run(request(pt.block_loop, 3, timeout=0.5))
        assert result.error.exception_type == "flink_tasks.TaskTimeoutError"
        assert time.monotonic() - started < 1.5
        assert ticks > 20  # this loop kept running while the task loop was blocked
        # the wedged loop is replaced: the next async task does not wait for the blocker
        started = time.monotonic()
        assert value(await r.run(request(pt.async_add, 1, 2))) == 3
        assert time.monotonic() - started < 1
        assert r.metrics.value("flink_tasks_task_loops_replaced_total") == 1
        ticker.cancel()
    finally:
        await r.aclose()


async def test_thread_pool_runs_sync_tasks_in_this_process() -> None:
    r = TaskRunner(pt.tasks, pool=PoolSettings(kind="thread", size=2))
    try:
        assert value(await r.run(request(pt.pid))) == os.getpid()
        result = await r.run(request(pt.hang, 0.5, timeout=0.1))
        assert result.error.exception_type == "flink_tasks.TaskTimeoutError"
    finally:
        await r.aclose()


def test_registry_target_finds_the_module_variable() -> None:
    assert registry_target(pt.tasks) == "tests.unit.pool_tasks:tasks"
    from flink_tasks import FlinkTasks

    with pytest.raises(ValueError, match="module-level variable"):
        registry_target(FlinkTasks())


def test_process_pool_refuses_a_registry_children_cannot_import() -> None:
    from flink_tasks import FlinkTasks

    with pytest.raises(ValueError, match="MODULE:ATTR"):
        TaskRunner(FlinkTasks(), pool=PoolSettings(kind="process"))


async def test_children_that_cannot_import_the_registry_fail_the_start() -> None:
    r = TaskRunner(pt.tasks, pool=PoolSettings(kind="process", size=1, registry="no.such:mod"))
    with pytest.raises(RuntimeError, match=r"cannot import no\.such:mod"):
        await r.start()
    await r.aclose()


@pytest.mark.parametrize(
    ("text", "size"),
    [(1024, 1024), ("512MiB", 512 * 2**20), ("1.5 GB", 1_500_000_000), ("800k", 800_000)],
)
def test_parse_memory_size(text: int | str, size: int) -> None:
    assert parse_memory_size(text) == size


@pytest.mark.parametrize("text", ["lots", "12 parsecs", "", "-5MiB", 0])
def test_parse_memory_size_refuses(text: int | str) -> None:
    with pytest.raises(ValueError):
        parse_memory_size(text)


async def test_async_task_queued_behind_a_blocker_moves_to_a_new_loop() -> None:
    r = TaskRunner(pt.tasks)
    try:
        blocker = asyncio.ensure_future(r.run(request(pt.block_loop, 4, timeout=10)))
        await asyncio.sleep(0.05)  # the blocker has started and holds its loop
        started = time.monotonic()
        assert value(await r.run(request(pt.async_add, 2, 2))) == 4
        # moved once the watchdog saw the loop wedged (~1 s), not after the blocker's 4 s
        assert time.monotonic() - started < 3
        assert r.metrics.value("flink_tasks_task_loops_replaced_total") == 1
        assert value(await blocker) == "unblocked"  # it finishes on its old loop
    finally:
        await r.aclose()
