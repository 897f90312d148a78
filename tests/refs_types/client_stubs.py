"""The client's side: stubs of the worker's tasks by name, and its own copies of the types.

Imports nothing of `worker_tasks`: the names (`geo.Point`, `shop.Order`, the task type names)
are the whole contract between the two.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pydantic

from flink_tasks import FlinkTasks, TaskRef, register_type

WORKER_MODULE = "tests.refs_types.worker_tasks"
tasks = FlinkTasks()


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int
    label: str = ""


class Order(pydantic.BaseModel):
    sku: str
    quantity: int
    points: list[Point] = []


@dataclasses.dataclass
class Unregistered:
    """Never registered: sending it must fail here, before anything is sent."""

    value: int


register_type(Point, name="geo.Point")
register_type(Order, name="shop.Order")


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
