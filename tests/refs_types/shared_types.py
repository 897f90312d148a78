"""The own types both sides of the task-reference tests use, registered under their names.

A client and a worker share a types module (not the task code): what crosses is the registered
name (`geo.Point`, `shop.Order`), and each process rebuilds the value as the class it registered
under that name. `worker_tasks` and `client_stubs` both import this module; `client_stubs` never
imports `worker_tasks`.
"""

from __future__ import annotations

import dataclasses

import pydantic

from flink_tasks import register_type


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
    """Never registered: sending it fails before anything is sent, returning it fails the task."""

    value: int


register_type(Point, name="geo.Point")
register_type(Order, name="shop.Order")
