"""One `FlinkTasksClient` on the real runtime: many concurrent pipelines; a broker that is down."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from flink_tasks_client import FlinkTasksClient, TaskError, TransportError

from flink_tasks import PipelineBuilder
from flink_tasks.testing import PipelineEnvironment
from tests import pipelines as t

pytestmark = pytest.mark.integration

CONCURRENT = 1_000


def _pipeline(i: int) -> tuple[PipelineBuilder, object]:
    """A mix of shapes, each with its own expected outcome."""
    kind = i % 4
    if kind == 0:
        return t.multiply.send(i, 2), i * 2
    if kind == 1:
        return t.multiply.send(i, 3).continue_with(t.add, 1), i * 3 + 1
    if kind == 2:
        return t.async_add.send(i, 0.5), i + 0.5
    return t.fail.send(f"failure {i}"), f"failure {i}"


@pytest.mark.slow
async def test_a_thousand_concurrent_pipelines_from_one_client(
    local_env: PipelineEnvironment, record_property: Callable[[str, object], None]
) -> None:
    client = local_env.client
    assert isinstance(client, FlinkTasksClient)
    cases = [_pipeline(i) for i in range(CONCURRENT)]
    started = time.monotonic()
    futures = [
        asyncio.wrap_future(client.submit(p, timeout=timedelta(minutes=4))) for p, _ in cases
    ]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    elapsed = time.monotonic() - started
    record_property("concurrent_pipelines_seconds", round(elapsed, 2))
    print(f"\n{CONCURRENT} concurrent pipelines from one client: {elapsed:.1f}s")
    wrong = []
    for (pipeline, expected), outcome in zip(cases, outcomes, strict=True):
        if isinstance(outcome, TaskError):
            ok = outcome.exception_type == "builtins.ValueError" and (
                outcome.exception_message == expected
            )
        else:
            ok = outcome == expected
        if not ok:
            wrong.append((pipeline.id, expected, outcome))
    assert not wrong, f"{len(wrong)} wrong outcomes, e.g. {wrong[:3]}"
    assert client.pending_count == 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_broker_that_is_down_is_an_error_within_the_connect_timeout() -> None:
    port = _closed_port()  # nothing listens there once the socket is closed
    started = time.monotonic()
    client = FlinkTasksClient(f"127.0.0.1:{port}", connect_timeout=timedelta(seconds=2))
    try:
        future = client.submit(t.multiply.send(1, 2))
        with pytest.raises(TransportError, match="cannot reach Kafka"):
            await asyncio.wrap_future(future)
        assert time.monotonic() - started < 2 + 3
        with pytest.raises(TransportError):
            await client.get_status("anything")
    finally:
        await client.aclose()
    started = time.monotonic()
    with pytest.raises(TransportError, match="cannot reach Kafka"):
        async with FlinkTasksClient(f"127.0.0.1:{port}", connect_timeout=timedelta(seconds=1)):
            pass
    assert time.monotonic() - started < 1 + 3
