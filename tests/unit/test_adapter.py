"""The StateFun adapter: no process-wide patch of the SDK, batch-end callbacks run once per
batch after its last invocation, missing state specs asked for as the SDK does."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from flink_tasks.statefun.adapter import (
    CellSpec,
    Invocation,
    Outbox,
    StatefunEndpoint,
)
from flink_tasks.testing.wire_codec import decode_reply, encode_batch


def test_the_sdk_is_not_patched() -> None:
    import statefun.request_reply_v3 as sdk

    assert sdk.collect_success.__module__ == "statefun.request_reply_v3"


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
