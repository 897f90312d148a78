"""Worker-side cost of one task attempt as StateFun calls it: one `ToFunction` per task (one
invocation at its own address), `--inflight` calls at once, through `Worker.handle` only (no HTTP,
no JVM). Prints tasks/s (wall) and CPU microseconds per task (all threads of this process): the
CPU figure is the one to compare on a shared machine.

    python -m bench.worker_handoff [--task ident] [-n 4000] [--inflight 256]

Run it from two source trees (PYTHONPATH) one after the other to compare them (docs/benchmarks.md,
"Async task hand-off").
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import time

from statefun import request_reply_v3

from flink_tasks import serialization, wire
from flink_tasks._proto import messages_pb2
from flink_tasks.worker import Worker
from tests.faults.fault_tasks import tasks


class _NullSink:
    """Reports go nowhere (no task here outlives the inline wait)."""

    max_report_bytes = 1 << 20

    def send(self, pipeline_id: str, report: bytes) -> None:
        pass

    def close(self, timeout: float = 10.0) -> None:
        pass


def _body(i: int, task_type: str) -> bytes:
    request = messages_pb2.TaskRequest(
        task_id=f"t{i}",
        task_type=task_type,
        pipeline_id="P:s1",
        root_pipeline_id="P",
        invocation=1,
        slot=1 + i % 100,
    )
    request.args.CopyFrom(serialization.encode_args([i]))
    pb = request_reply_v3.ToFunction()
    batch = pb.invocation
    batch.target.namespace, batch.target.type, batch.target.id = (
        tasks.namespace,
        tasks.worker_name,
        f"t{i}",
    )
    invocation = batch.invocations.add()
    invocation.caller.namespace, invocation.caller.type, invocation.caller.id = (
        "flink_tasks",
        "pipeline",
        "P:s1",
    )
    invocation.argument.typename = wire.TASK_REQUEST
    invocation.argument.has_value = True
    invocation.argument.value = request.SerializeToString()
    return pb.SerializeToString()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="ident")
    parser.add_argument("-n", type=int, default=4000)
    parser.add_argument("--inflight", type=int, default=256)
    args = parser.parse_args()
    task_type = f"tests.faults.fault_tasks.{args.task}"
    kwargs = {"reports": _NullSink()} if "reports" in inspect.signature(Worker).parameters else {}
    worker = Worker(tasks, **kwargs)
    bodies = [_body(i, task_type) for i in range(args.n)]

    async def run(chunk: list[bytes]) -> None:
        gate = asyncio.Semaphore(args.inflight)

        async def one(body: bytes) -> None:
            async with gate:
                assert await worker.handle(body)

        await asyncio.gather(*(one(b) for b in chunk))

    await run(bodies[:500])  # warm-up
    cpu, wall = time.process_time(), time.perf_counter()
    await run(bodies)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"{task_type} n={args.n} inflight={args.inflight}: {args.n / wall:,.0f} tasks/s, "
        f"{cpu * 1e6 / args.n:.0f} us CPU per task"
    )
    await worker.runner.aclose()


if __name__ == "__main__":
    asyncio.run(main())
