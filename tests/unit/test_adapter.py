"""The StateFun adapter: no process-wide patch of the SDK, batch-end callbacks run once per
batch after its last invocation, and the invocation count read from the wire format."""

from __future__ import annotations

import asyncio

import pytest
from statefun import request_reply_v3

from flink_tasks.statefun.adapter import (
    CellSpec,
    Invocation,
    Outbox,
    StatefunEndpoint,
    count_invocations,
)
from flink_tasks.testing.wire_codec import decode_reply, encode_batch


@pytest.mark.parametrize("invocations", [0, 1, 2, 300])
def test_count_invocations_matches_a_full_parse(invocations: int) -> None:
    body = encode_batch(
        "ns/f",
        "id",
        {"cell": ("ns.v1/cell", b"x" * 200), "empty": ("ns.v1/empty", None)},
        [("ns/caller", "c", "ns.v1/msg", bytes([i % 256]) * (i % 300)) for i in range(invocations)],
    )
    parsed = request_reply_v3.ToFunction.FromString(body)
    assert count_invocations(body) == len(parsed.invocation.invocations) == invocations


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
