"""The StateFun adapter: the reply it writes is the one the official SDK's handler writes for the
same effects, batch-end callbacks run once per batch after its last invocation, missing state
specs are asked for as the SDK asks for them, and what it cannot serve is an error."""

from __future__ import annotations

import asyncio
import gc
import re
import weakref
from datetime import timedelta
from typing import Any

import pytest
import statefun
from statefun.request_reply_pb2 import FromFunction

from flink_tasks import wire
from flink_tasks.statefun.adapter import (
    CellSpec,
    Invocation,
    Outbox,
    StatefunEndpoint,
)
from flink_tasks.testing.wire_codec import decode_reply, encode_batch


def _raw(typename: str) -> Any:
    return statefun.simple_type(typename, serialize_fn=bytes, deserialize_fn=bytes)


def _sdk_reply(body: bytes, specs: list[Any], fun: Any) -> FromFunction:
    """What the pinned SDK's own handler answers to `body`, for `fun` bound as ns/f."""
    functions = statefun.StatefulFunctions()
    functions.register("ns/f", fun, specs)
    handler = statefun.RequestReplyHandler(functions)
    return FromFunction.FromString(asyncio.run(handler.handle_async(body)))


def test_the_reply_is_the_one_the_sdk_writes_for_the_same_effects() -> None:
    async def ours(invocation: Invocation, outbox: Outbox) -> None:
        outbox.send("ns/g", "g1", "ns.v1/m", invocation.payload + b"!")
        outbox.send_after(timedelta(seconds=1.5), "ns/g", "g2", "ns.v1/m", b"later")
        outbox.egress("replies", "key-1", b"record")
        outbox.set("a", (outbox.get("a") or b"") + b"+")
        outbox.set("b", None)

    async def theirs(context: Any, message: Any) -> None:
        m = _raw("ns.v1/m")
        payload = message.typed_value.value
        context.send(statefun.message_builder("ns/g", "g1", value=payload + b"!", value_type=m))
        later = statefun.message_builder("ns/g", "g2", value=b"later", value_type=m)
        context.send_after(timedelta(seconds=1.5), later)
        context.send_egress(
            statefun.kafka_egress_message(
                typename=wire.EGRESS_ID, topic="replies", key="key-1", value=b"record"
            )
        )
        context.storage.a = (context.storage.a or b"") + b"+"
        del context.storage.b

    endpoint = StatefunEndpoint()
    endpoint.register("ns/f", ours, [CellSpec("a", "ns.v1/a"), CellSpec("b", "ns.v1/b")])
    specs = [statefun.ValueSpec("a", _raw("ns.v1/a")), statefun.ValueSpec("b", _raw("ns.v1/b"))]
    body = encode_batch(
        "ns/f",
        "id",
        {"a": ("ns.v1/a", b"x"), "b": ("ns.v1/b", b"y")},
        [("ns/caller", "c", "ns.v1/m", b"one"), (None, None, "ns.v1/m", b"two")],
    )
    reply = FromFunction.FromString(asyncio.run(endpoint.handle(body)))
    assert reply == _sdk_reply(body, specs, theirs)
    assert decode_reply(reply.SerializeToString()).mutations == {"a": b"x++", "b": None}


def test_missing_specs_are_asked_for_as_the_sdk_asks_for_them() -> None:
    async def ours(invocation: Invocation, outbox: Outbox) -> None:
        raise AssertionError("nothing runs without its state")

    async def theirs(context: Any, message: Any) -> None:
        raise AssertionError("nothing runs without its state")

    endpoint = StatefunEndpoint()
    week = timedelta(days=7)
    endpoint.register(
        "ns/f", ours, [CellSpec("a", "ns.v1/a"), CellSpec("b", "ns.v1/b", expire_after_write=week)]
    )
    specs = [
        statefun.ValueSpec("a", _raw("ns.v1/a")),
        statefun.ValueSpec("b", _raw("ns.v1/b"), expire_after_write=week),
    ]
    body = encode_batch("ns/f", "id", {}, [(None, None, "ns.v1/m", b"x")])
    reply = FromFunction.FromString(asyncio.run(endpoint.handle(body)))
    assert reply == _sdk_reply(body, specs, theirs)
    assert [v.state_name for v in reply.incomplete_invocation_context.missing_values] == ["a", "b"]


def test_an_unknown_function_or_a_cell_of_another_type_is_an_error() -> None:
    async def handler(invocation: Invocation, outbox: Outbox) -> None:
        outbox.get("a")

    endpoint = StatefunEndpoint()
    endpoint.register("ns/f", handler, [CellSpec("a", "ns.v1/a")])
    unknown = encode_batch("other/f", "id", {}, [(None, None, "ns.v1/m", b"x")])
    with pytest.raises(ValueError, match="Unable to find a function of type other/f"):
        asyncio.run(endpoint.handle(unknown))
    retyped = encode_batch("ns/f", "id", {"a": ("ns.v2/a", b"x")}, [(None, None, "ns.v1/m", b"")])
    with pytest.raises(TypeError, match=re.escape("holds a ns.v2/a value, declared as ns.v1/a")):
        asyncio.run(endpoint.handle(retyped))


def test_a_message_without_an_address_id_is_refused() -> None:
    async def handler(invocation: Invocation, outbox: Outbox) -> None:
        outbox.send("ns/g", "", "ns.v1/m", b"x")

    endpoint = StatefunEndpoint()
    endpoint.register("ns/f", handler)
    with pytest.raises(ValueError, match="needs an address id"):
        asyncio.run(endpoint.handle(encode_batch("ns/f", "id", {}, [(None, None, "t/m", b"")])))


def test_batch_end_runs_once_after_the_last_invocation_and_its_writes_are_in_the_reply() -> None:
    seen: list[str] = []

    async def handler(invocation: Invocation, outbox: Outbox) -> None:
        seen.append(invocation.payload.decode())
        if len(seen) == 1:
            outbox.at_batch_end(lambda: (seen.append("end"), outbox.set("cell", b"written")))

    endpoint = StatefunEndpoint()
    endpoint.register("ns/f", handler, [CellSpec("cell", "ns.v1/cell")])
    body = encode_batch(
        "ns/f",
        "id",
        {"cell": ("ns.v1/cell", None)},
        [(None, None, "ns.v1/m", b"a"), (None, None, "ns.v1/m", b"b")],
    )
    reply = decode_reply(asyncio.run(endpoint.handle(body)))
    assert seen == ["a", "b", "end"]
    assert reply.mutations == {"cell": b"written"}


@pytest.mark.parametrize("invocations", [0, 1, 300])
def test_every_invocation_runs_in_order_with_its_caller(invocations: int) -> None:
    seen: list[tuple[str, str | None, str | None]] = []
    ends: list[int] = []

    async def handler(invocation: Invocation, outbox: Outbox) -> None:
        if not seen:
            outbox.at_batch_end(lambda: ends.append(len(seen)))
        seen.append((invocation.payload.decode(), invocation.caller_typename, invocation.caller_id))

    endpoint = StatefunEndpoint()
    endpoint.register("ns/f", handler, [CellSpec("cell", "ns.v1/cell")])
    calls = [("ns/caller", f"c{i}", "ns.v1/m", str(i).encode()) for i in range(invocations)]
    calls[1:2] = [(None, None, "ns.v1/m", b"1")] if invocations > 1 else []
    body = encode_batch("ns/f", "id", {"cell": ("ns.v1/cell", b"x")}, calls)
    reply = decode_reply(asyncio.run(endpoint.handle(body)))
    assert seen == [(p.decode(), t, c) for t, c, _, p in calls]
    assert ends == ([invocations] if invocations else [])
    assert reply.mutations == {}


def test_missing_state_specs_are_asked_for_and_nothing_runs() -> None:
    seen: list[bytes] = []

    async def handler(invocation: Invocation, outbox: Outbox) -> None:
        seen.append(invocation.payload)

    endpoint = StatefunEndpoint()
    endpoint.register("ns/f", handler, [CellSpec("a", "ns.v1/a"), CellSpec("b", "ns.v1/b")])
    body = encode_batch("ns/f", "id", {"a": ("ns.v1/a", None)}, [(None, None, "ns.v1/m", b"x")])
    reply = decode_reply(asyncio.run(endpoint.handle(body)))
    assert [(c.name, c.typename) for c in reply.missing] == [("b", "ns.v1/b")]
    assert seen == []


def test_a_batch_leaves_no_reference_cycle_behind() -> None:
    """What a handler keeps in `scratch` may refer back to the Outbox (the pipeline function
    keeps a cell loader, a bound method of it): freed with the batch, not left to the GC."""
    kept: list[weakref.ref[_Holder]] = []

    async def handler(invocation: Invocation, outbox: Outbox) -> None:
        holder = outbox.scratch.setdefault("holder", _Holder(outbox.get))
        outbox.at_batch_end(lambda: None)
        kept.append(weakref.ref(holder))

    endpoint = StatefunEndpoint()
    endpoint.register("ns/f", handler, [CellSpec("cell", "ns.v1/cell")])
    body = encode_batch(
        "ns/f", "id", {"cell": ("ns.v1/cell", b"x")}, [(None, None, "ns.v1/m", b"a")] * 2
    )
    gc.collect()
    gc.disable()
    try:
        asyncio.run(endpoint.handle(body))
        assert len(kept) == 2 and kept[0]() is None
    finally:
        gc.enable()


class _Holder:
    def __init__(self, loader: object) -> None:
        self.loader = loader
