"""Issue 14 items 1 and 5 in memory: tasks by name (`FlinkTasks.ref`, `stub`) build the entries
the bound tasks would, and registered own types (a dataclass, a pydantic model, a class with
converters) round-trip as themselves through arguments, results and state, never pickled."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from flink_tasks import (
    FlinkTasks,
    RetryPolicy,
    SerializationError,
    TaskError,
    TaskRef,
    register_type,
    serialization,
)
from flink_tasks._proto import pipeline_pb2, values_pb2
from flink_tasks.testing import PipelineEnvironment
from flink_tasks.value_types import unregister_type
from tests.refs_types import shared_types as shared
from tests.refs_types import worker_tasks as w

M = w.MODULE
T = shared.__name__


@pytest.fixture
async def env() -> AsyncIterator[PipelineEnvironment]:
    async with PipelineEnvironment.in_process(w.tasks, default_timeout=20) as environment:
        yield environment


def _entries(pipeline: Any) -> list[pipeline_pb2.Entry]:
    """The wire entries without their random task ids."""
    out = pipeline.to_proto()
    for entry in out.entries:
        entry.task.task_id = ""
    return list(out.entries)


# ---------------------------------------------------------------- task references


def test_ref_builds_the_entry_the_bound_task_builds() -> None:
    assert _entries(w.tasks.ref(f"{M}.multiply").send(6, 7)) == _entries(w.multiply.send(6, 7))
    chained = w.multiply.send(2, 3).continue_with(w.add, 4)
    by_name = w.tasks.ref(f"{M}.multiply").send(2, 3).continue_with(w.tasks.ref(f"{M}.add"), 4)
    assert _entries(by_name) == _entries(chained)


def test_ref_carries_the_same_options_as_bind() -> None:
    registry = FlinkTasks(namespace="shop", worker_name="pricing")
    policy = RetryPolicy(retry_for=[ValueError], max_retries=2, delay=timedelta(seconds=1))
    options: dict[str, Any] = {
        "retry_policy": policy,
        "is_fruitful": False,
        "display_name": "price it",
        "timeout": timedelta(seconds=9),
    }

    @registry.bind("shop.price", **options)
    def price(sku: str) -> None: ...

    reference = registry.ref("shop.price", **options)
    assert reference.options == price.definition.options
    assert _entries(reference.send("a1")) == _entries(price.send("a1"))
    entry = _entries(reference.send("a1"))[0].task
    assert (entry.namespace, entry.worker_name, entry.task_type) == (
        "shop",
        "pricing",
        "shop.price",
    )
    # another registry's defaults, overridden per reference: the entry the binding registry makes
    other = FlinkTasks().ref("shop.price", namespace="shop", worker_name="pricing", **options)
    assert _entries(other.send("a1")) == _entries(price.send("a1"))
    assert _entries(reference.send("a1").set(timeout=timedelta(seconds=3))) == _entries(
        price.send("a1").set(timeout=timedelta(seconds=3))
    )


def test_stub_names_the_worker_task_and_never_runs() -> None:
    client = FlinkTasks()

    @client.stub(module=M)
    def multiply(x: int, y: int) -> int:
        raise NotImplementedError

    @client.stub(f"{M}.add")
    def plus(x: int, y: int) -> int:
        raise NotImplementedError

    assert isinstance(multiply, TaskRef) and multiply.type_name == f"{M}.multiply"
    assert plus.type_name == f"{M}.add"
    assert _entries(multiply.send(6, 7)) == _entries(w.multiply.send(6, 7))
    with pytest.raises(TypeError, match=r"only builds pipelines \(use \.send"):
        multiply(6, 7)
    assert multiply.__doc__ is None and plus.__name__ == "plus"  # type: ignore[attr-defined]

    def unnamed(x: int) -> int:
        raise NotImplementedError

    with pytest.raises(ValueError, match="needs the worker's type name"):
        client.stub()(unnamed)
    with pytest.raises(ValueError, match="non-empty type name"):
        client.ref("")


async def test_refs_run_in_a_worker(env: PipelineEnvironment) -> None:
    client = FlinkTasks()  # another registry: only names connect it to the worker
    multiply = client.ref(f"{M}.multiply")
    pipeline = multiply.send(6, 7).continue_with(client.ref(f"{M}.add"), 8)
    assert await env.submit_async(pipeline) == 50
    with pytest.raises(TaskError) as caught:
        await env.submit_async(client.ref(f"{M}.nope").send())
    assert caught.value.exception_type == "flink_tasks.TaskNotFoundError"


# ---------------------------------------------------------------- own types


def test_registered_types_round_trip_as_themselves_and_are_never_pickled() -> None:
    order = shared.Order(sku="a1", quantity=2, points=[shared.Point(1, 2, "p")])
    value = {"p": [shared.Point(1, 2), (w.Celsius(20.5),)], "o": order}
    encoded = serialization.encode(value)
    assert b"geo.Point" in encoded.SerializeToString()
    assert "pickled" not in str(encoded)
    decoded = serialization.decode(encoded)
    assert decoded == value
    assert type(decoded["p"][0]) is shared.Point and type(decoded["o"]) is shared.Order
    assert type(decoded["o"].points[0]) is shared.Point


def test_an_unregistered_type_is_refused_at_the_sender_with_the_fix() -> None:
    with pytest.raises(SerializationError) as caught:
        w.type_names.send(shared.Unregistered(1)).to_proto()
    message = str(caught.value)
    assert f"{T}.Unregistered cannot be serialized" in message
    assert "flink_tasks.register_type(Unregistered)" in message
    assert "the client and the worker" in message


def test_an_unknown_name_is_a_clear_error_at_the_receiver() -> None:
    value = values_pb2.Value()
    value.registered.type_name = "nobody.Knows"
    value.registered.value.int_value = 1
    with pytest.raises(SerializationError, match=r"'nobody.Knows'.*flink_tasks.register_type"):
        serialization.decode(value)
    wrong_shape = values_pb2.Value()
    wrong_shape.registered.type_name = "geo.Point"
    wrong_shape.registered.value.dict_value.entries.add().key.str_value = "z"
    with pytest.raises(SerializationError, match=r"'geo.Point' does not fit"):
        serialization.decode(wrong_shape)


def test_registered_levels_count_towards_the_depth_limit() -> None:
    @dataclasses.dataclass
    class Node:
        child: Any

    register_type(Node, name="test.Node")
    try:
        ok: Any = 1
        for _ in range(serialization.MAX_VALUE_DEPTH // 2):  # a Node is 2 levels: itself, its dict
            ok = Node(ok)
        assert serialization.decode(serialization.encode(ok)) == ok
        with pytest.raises(SerializationError, match="more than 20 levels"):
            serialization.encode(Node(ok))
    finally:
        unregister_type(Node)


def test_register_type_refuses_ambiguity() -> None:
    @dataclasses.dataclass
    class Other:
        x: int

    with pytest.raises(ValueError, match=r"'geo\.Point' is already registered"):
        register_type(Other, name="geo.Point")
    with pytest.raises(ValueError, match=r"already registered as 'geo\.Point'"):
        register_type(shared.Point, name="elsewhere.Point")
    assert register_type(shared.Point, name="geo.Point") is shared.Point  # again: nothing changes

    class Plain:
        pass

    with pytest.raises(TypeError, match="pass to_value= and from_value="):
        register_type(Plain)


async def test_own_types_in_args_results_and_state(env: PipelineEnvironment) -> None:
    moved = await env.submit_async(w.move.send(shared.Point(1, 2, "a"), 10, dy=1))
    assert moved == shared.Point(11, 3, "a") and type(moved) is shared.Point
    order = shared.Order(sku="a1", quantity=2, points=[shared.Point(0, 0)])
    filled = await env.submit_async(w.fill.send(order, 3))
    assert filled == shared.Order(sku="a1", quantity=5, points=[shared.Point(0, 0)])
    assert await env.submit_async(w.warm.send(w.Celsius(20.0))) == w.Celsius(21.0)
    received = await env.submit_async(w.type_names.send(shared.Point(0, 0), order, w.Celsius(1)))
    assert received == [f"{T}.Point", f"{T}.Order", f"{M}.Celsius"]
    # state: the initial state, a task's new state, and a registered previous value in between
    stateful = (
        w.remember.send("order", order)
        .continue_with(w.remember, "point", shared.Point(5, 5))
        .continue_with(w.read_state)
        .with_initial(state={"start": w.Celsius(0.5)})
    )
    assert await env.submit_async(stateful) == {
        "start": w.Celsius(0.5),
        "order": order,
        "point": shared.Point(5, 5),
    }


async def test_an_unregistered_result_fails_the_task_clearly(env: PipelineEnvironment) -> None:
    with pytest.raises(TaskError) as caught:
        await env.submit_async(w.make_unregistered.send(3))
    assert caught.value.exception_type == "flink_tasks.SerializationError"
    assert "register_type(Unregistered)" in caught.value.exception_message
