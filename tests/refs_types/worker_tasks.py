"""The worker's side of the task-reference and own-type tests: tasks and the types they take.

Clients in these tests never import this module: they use `client_stubs` (stubs by name) and the
types of `shared_types`; `Celsius` is registered here only (a client cannot rebuild it).
"""

from __future__ import annotations

from typing import Any

from flink_tasks import FlinkTasks, register_type
from tests.refs_types.shared_types import Order, Point, Unregistered

tasks = FlinkTasks()
MODULE = __name__


class Celsius:
    """Neither a dataclass nor a model: crosses with converters."""

    def __init__(self, degrees: float) -> None:
        self.degrees = degrees

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Celsius) and other.degrees == self.degrees

    def __repr__(self) -> str:
        return f"Celsius({self.degrees})"


register_type(Celsius, name="weather.Celsius", to_value=lambda c: c.degrees, from_value=Celsius)


@tasks.bind()
def multiply(x: int, y: int) -> int:
    return x * y


@tasks.bind()
def add(x: int, y: int) -> int:
    return x + y


@tasks.bind()
def move(point: Point, dx: int, dy: int = 0) -> Point:
    assert type(point) is Point, type(point)
    return Point(point.x + dx, point.y + dy, point.label)


@tasks.bind()
def fill(order: Order, extra: int) -> Order:
    assert type(order) is Order, type(order)
    return order.model_copy(update={"quantity": order.quantity + extra})


@tasks.bind()
def warm(temperature: Celsius) -> Celsius:
    assert type(temperature) is Celsius, type(temperature)
    return Celsius(temperature.degrees + 1)


@tasks.bind(with_state=True)
def remember(state: Any, *args: Any) -> tuple[Any, Any]:
    """`(previous result,) key, value`: puts `value` in the state dict; returns what was there."""
    key, value = args[-2:]
    state = dict(state or {})
    before = state.get(key)
    state[key] = value
    return state, before


@tasks.bind(with_state=True)
def read_state(state: Any, *_: Any) -> tuple[Any, Any]:
    return state, state


@tasks.bind()
def make_unregistered(value: int) -> Unregistered:
    return Unregistered(value)


@tasks.bind()
def type_names(*values: Any) -> list[str]:
    """What the worker received, as its own class names."""
    return [f"{type(v).__module__}.{type(v).__qualname__}" for v in values]


@tasks.bind()
def celsius(degrees: float) -> Celsius:
    return Celsius(degrees)
