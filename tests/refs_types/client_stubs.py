"""The client's side: stubs of the worker's tasks by name.

Imports nothing of `worker_tasks`: the task type names, and the types of `shared_types` by their
registered names (`geo.Point`, `shop.Order`), are the whole contract between the two.
"""

from __future__ import annotations

from typing import Any

from flink_tasks import FlinkTasks, TaskRef
from tests.refs_types.shared_types import Order, Point

WORKER_MODULE = "tests.refs_types.worker_tasks"
tasks = FlinkTasks()


@tasks.stub(module=WORKER_MODULE)
def multiply(x: int, y: int) -> int:
    raise NotImplementedError  # runs in the worker


@tasks.stub(module=WORKER_MODULE)
def move(point: Point, dx: int, dy: int = 0) -> Point:
    raise NotImplementedError


@tasks.stub(module=WORKER_MODULE)
def fill(order: Order, extra: int) -> Order:
    raise NotImplementedError


remember: TaskRef[..., Any] = tasks.ref(f"{WORKER_MODULE}.remember")
read_state = tasks.ref(f"{WORKER_MODULE}.read_state")
add = tasks.ref(f"{WORKER_MODULE}.add")
