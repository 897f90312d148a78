"""Tasks shared by the test suites: the in-process tests and the real-runtime tests serve these."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from examples import seed
from examples.seed import (
    add,
    add_positive,
    average,
    count_to_100,
    divide,
    multiply,
    multiply_and_subtract,
    subtract,
)
from flink_tasks import FlinkTasks, PipelineBuilder, RetryPolicy, TaskException
from flink_tasks.context import TaskContext

# the user guide's arithmetic tasks (examples/seed.py) plus the probes below
tasks = FlinkTasks(default_timeout=timedelta(seconds=30)).include(seed.tasks)
__all__ = [
    "add",
    "add_positive",
    "average",
    "count_to_100",
    "divide",
    "multiply",
    "multiply_and_subtract",
    "subtract",
    "tasks",
]


@tasks.bind()
def echo(*args: Any, **kwargs: Any) -> Any:
    if kwargs:
        return (*args, kwargs)
    return args if len(args) != 1 else args[0]


@tasks.bind()
def make_list(*items: Any) -> list[Any]:
    return list(items)


@tasks.bind()
def fail(message: str = "boom", *_: Any) -> None:
    raise ValueError(message)


@tasks.bind()
def fail_with_key_error(*_: Any) -> None:
    raise KeyError("missing")


@tasks.bind(with_state=True)
def multiply_with_state(state: Any, x: float, y: float) -> tuple[Any, float]:
    return 10, x * y


@tasks.bind(with_state=True)
def add_state(state: Any, x: float) -> tuple[Any, float]:
    return state, state + x


@tasks.bind(with_state=True)
def set_state(state: Any, new_state: Any, *_: Any) -> tuple[Any, Any]:
    return new_state, new_state


@tasks.bind(with_state=True)
def get_state(state: Any, *_: Any) -> tuple[Any, Any]:
    return state, state


@tasks.bind(with_state=True)
def update_state(state: Any, *args: Any) -> tuple[Any, Any]:
    key, value = args[-2:]
    new_state = dict(state or {})
    new_state[key] = value
    return new_state, value


@tasks.bind(with_state=True)
def set_state_then_fail(state: Any, *_: Any) -> tuple[Any, Any]:
    raise ValueError("failed after reading state")


@tasks.bind()
def handle_error(ex: TaskException, *args: Any) -> Any:
    return ("handled", ex.exception_type, ex.exception_message, *args)


@tasks.bind()
def rethrow(ex: TaskException) -> None:
    raise RuntimeError(f"rethrown: {ex.exception_message}")


@tasks.bind()
def give_none(*_: Any) -> None:
    return None


@tasks.bind(is_fruitful=False)
def not_fruitful(*args: Any) -> Any:
    return "ignored"


@tasks.bind()
def count_up(n: int) -> Iterator[int]:
    yield from range(n)


@tasks.bind()
async def async_add(x: float, y: float) -> float:
    await asyncio.sleep(0)
    return x + y


@tasks.bind()
def sleep_sync(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


@tasks.bind()
async def sleep_async(seconds: float, value: Any = None) -> Any:
    await asyncio.sleep(seconds)
    return value


@tasks.bind(timeout=timedelta(milliseconds=200))
async def hang(*_: Any) -> None:
    await asyncio.sleep(60)


@tasks.bind()
def unserializable(*_: Any) -> Any:
    return object()


@tasks.bind(with_context=True)
def who_am_i(context: TaskContext) -> Any:
    return {"task_id": context.task_id, "attempt": context.attempt}


# ---- orchestrators (the seed examples' are in examples/seed.py)


@tasks.bind()
def count_to(x: int, target: int) -> Any:
    if x >= target:
        return x
    return count_to.send(x + 1, target)


@tasks.bind(with_state=True)
def child_with_state(state: Any, _previous: Any, inline: bool) -> tuple[Any, PipelineBuilder]:
    child = set_state.send("child-state").continue_with(get_state)
    return state, child.inline() if inline else child


@tasks.bind()
def orchestrate_probe(index: int, seconds: float) -> PipelineBuilder:
    """Returns a child pipeline: a probe for `seconds`, then a record of "after"."""
    return probe.send(index, seconds).continue_with(record, "after")


# ---- side-effect probes (tests serve tasks in their own process, so they can look)

recorded: list[Any] = []


@tasks.bind(is_fruitful=False)
def record(*args: Any) -> None:
    recorded.append(args)


# ---- retries and concurrency probes

_attempts: dict[str, int] = {}
_attempts_lock = threading.Lock()


@tasks.bind(retry_policy=RetryPolicy(retry_for=[ValueError], max_retries=2))
def flaky(key: str, failures: int) -> str:
    with _attempts_lock:
        _attempts[key] = _attempts.get(key, 0) + 1
        attempt = _attempts[key]
    if attempt <= failures:
        raise ValueError(f"attempt {attempt} failed")
    return f"succeeded on attempt {attempt}"


@tasks.bind(retry_policy=RetryPolicy(retry_for=[LookupError], max_retries=3))
def fail_key_error_retried(*_: Any) -> None:
    raise KeyError("always")


@tasks.bind(retry_policy=RetryPolicy(retry_for=[KeyError], max_retries=3))
def fail_value_error_not_retried(*_: Any) -> None:
    raise ValueError("not retried")


_running = 0
_max_running = 0
_starts: list[int] = []
_probe_lock = threading.Lock()


def reset_concurrency_probe() -> None:
    global _running, _max_running
    with _probe_lock:
        _running = 0
        _max_running = 0
        _starts.clear()


def concurrency_probe() -> tuple[int, list[int]]:
    with _probe_lock:
        return _max_running, list(_starts)


@tasks.bind()
async def probe(index: int, seconds: float = 0.02) -> int:
    global _running, _max_running
    with _probe_lock:
        _running += 1
        _max_running = max(_max_running, _running)
        _starts.append(index)
    await asyncio.sleep(seconds)
    with _probe_lock:
        _running -= 1
    return index


@tasks.bind()
def fan_out_inside(count: int) -> PipelineBuilder:
    """An orchestrator that builds a fan-out too large to submit in one Kafka record."""
    from flink_tasks import in_parallel

    return in_parallel([multiply.send(i, 2) for i in range(count)]).continue_with(total)


@tasks.bind()
def total(values: list[float]) -> float:
    return sum(values)


# Gates: a test opens a gate when it is ready for the tasks waiting at it to finish, so a test of
# a running pipeline never races the pipeline's own speed. Only for workers in the test process.
_gates: dict[str, threading.Event] = {}
_gates_lock = threading.Lock()


def gate(name: str) -> threading.Event:
    with _gates_lock:
        return _gates.setdefault(name, threading.Event())


@tasks.bind(timeout=timedelta(minutes=2))
async def at_gate(name: str, value: Any = None) -> Any:
    """Returns `value` once the test opened gate `name` (`gate(name).set()`)."""
    event = gate(name)
    while not event.is_set():
        await asyncio.sleep(0.02)
    return value


# ---- pause points and delayed starts (docs/semantics.md "Pause points", "Delayed starts")


@tasks.bind(with_context=True)
def pause_after_me(context: TaskContext, value: Any = None) -> Any:
    """Asks its pipeline to pause once it succeeded, and returns `value`."""
    context.pause_pipeline()
    return value


@tasks.bind()
def started_at(*_: Any) -> float:
    """When the task started (seconds since the epoch)."""
    return time.time()
