"""Where a short pipeline's latency goes: each remote call's arrival and reply on one clock.

Runs one-task pipelines (and chains of `--steps`) one after another on `start_local`, the worker
in this process, and timestamps every request-reply call the worker serves together with the
client's submit and result. As no two pipelines overlap, the calls between a submit and its
result are that pipeline's, in order: the gaps between them are Kafka and Flink, the calls are
this worker. Not part of `make bench` (a diagnosis, not a ratio): `python -m bench.hops`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from statefun.request_reply_pb2 import ToFunction

from bench import tasks as bench_tasks
from flink_tasks.config import INLINE_CHAIN_STEPS_VAR
from flink_tasks.engine import EngineSettings
from flink_tasks.runtime import LocalRuntimeSettings
from flink_tasks.testing import PipelineEnvironment
from flink_tasks.testing._local import installed_client
from flink_tasks.worker.functions import Worker

Call = tuple[float, float, str]  # arrival, reply, the called function's type


def _instrument(calls: list[Call]) -> None:
    handle = Worker.handle

    async def timed(self: Worker, body: bytes) -> bytes:
        arrived = time.perf_counter()
        reply = await handle(self, body)
        calls.append((arrived, time.perf_counter(), _function_type(body)))
        return reply

    Worker.handle = timed  # type: ignore[method-assign]


def _function_type(body: bytes) -> str:
    target = ToFunction.FromString(body).invocation.target
    return target.type


def _segments(t0: float, t1: float, calls: list[Call]) -> list[tuple[str, float]]:
    """The pipeline's timeline as (what, ms): gaps and calls, in order."""
    out: list[tuple[str, float]] = []
    last, last_name = t0, "submit"
    for arrived, replied, function in calls:
        name = function.rpartition("/")[2] or function
        out.append((f"{last_name} -> {name}", (arrived - last) * 1000))
        out.append((f"call {name}", (replied - arrived) * 1000))
        last, last_name = replied, name
    out.append((f"{last_name} -> result", (t1 - last) * 1000))
    return out


async def measure(
    env: PipelineEnvironment, calls: list[Call], steps: int, runs: int, warmup: int
) -> dict[str, Any]:
    """`calls`: where the instrumented worker records its calls (cleared before each run)."""
    timelines: dict[tuple[str, ...], list[list[float]]] = {}
    totals = []
    for rep in range(warmup + runs):
        calls.clear()
        pipeline = bench_tasks.chain_pipeline(steps)
        t0 = time.perf_counter()
        assert await env.submit_async(pipeline, timeout=timedelta(minutes=1)) == steps
        t1 = time.perf_counter()
        if rep < warmup:
            continue
        segments = _segments(t0, t1, [c for c in calls if t0 <= c[0] <= t1])
        names = tuple(name for name, _ in segments)
        timelines.setdefault(names, []).append([ms for _, ms in segments])
        totals.append((t1 - t0) * 1000)
    names, rows = max(timelines.items(), key=lambda item: len(item[1]))
    return {
        "steps": steps,
        "runs": runs,
        "p50_ms": statistics.median(totals),
        "shape_share": len(rows) / runs,  # runs whose calls came in the most common order
        "median_ms": [
            (name, round(statistics.median(row[i] for row in rows), 3))
            for i, name in enumerate(names)
        ],
    }


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    run_dir = Path(args.run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    settings = LocalRuntimeSettings.from_env(
        run_dir=run_dir,
        kafka_port=args.kafka_port,
        kafka_controller_port=args.kafka_port + 1,
        rest_port=args.rest_port,
        worker_port=args.worker_port,
        buffer_timeout=timedelta(milliseconds=args.buffer_timeout_ms)
        if args.buffer_timeout_ms is not None
        else LocalRuntimeSettings().buffer_timeout,
    )
    factory = installed_client()

    def client(**options: Any) -> Any:  # without events: no event records to write per pipeline
        return factory(**{**options, "events_topic": ""} if args.no_events else options)

    engine = EngineSettings(stall_timeout=None) if args.no_stall_check else None
    async with PipelineEnvironment.start_local(
        bench_tasks.tasks, settings=settings, client=client, engine=engine
    ) as env:
        calls: list[Call] = []
        _instrument(calls)  # once: the worker's class, for every measurement
        return [await measure(env, calls, steps, args.runs, args.warmup) for steps in args.steps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--inline-chain-steps", type=int, default=0)
    parser.add_argument("--buffer-timeout-ms", type=int, default=None)
    parser.add_argument("--no-events", action="store_true", help="submit without events")
    parser.add_argument(
        "--no-stall-check", action="store_true", help="EngineSettings(stall_timeout=None)"
    )
    parser.add_argument("--run-dir", default="/tmp/ft-bench-hops")
    parser.add_argument("--kafka-port", type=int, default=21192)
    parser.add_argument("--rest-port", type=int, default=21181)
    parser.add_argument("--worker-port", type=int, default=21100)
    args = parser.parse_args()
    os.environ[INLINE_CHAIN_STEPS_VAR] = str(args.inline_chain_steps)
    for result in asyncio.run(main_async(args)):
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
