"""B4, flink-tasks side: the pipeline function's own cost, in-process, no network.

pipeline-only: `Worker.handle` (the request-reply handler StateFun calls) is driven by
bench._router with `ToFunction` batches from `flink_tasks.statefun.adapter.encode_batch`; task
requests are answered at once by the router (no user code), results queue up per address while
a call is in flight, as in StateFun. Completions/s = tasks / time inside `Worker.handle`.
end-to-end: `PipelineEnvironment.in_process` running the real (trivial) tasks; wall time.

Run: python -m bench.b4_engine --out FILE [--reps 5] [--shapes fanout:10000,unordered:10000,...]
[--profile F]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import pstats
import statistics
import sys
import time
import uuid
from typing import Any

from google.protobuf.internal import api_implementation

from bench import tasks as bench_tasks
from bench._router import Router, decode, encode
from flink_tasks import wire
from flink_tasks._proto import messages_pb2
from flink_tasks.engine import EngineSettings
from flink_tasks.pipeline.builder import PipelineBuilder
from flink_tasks.testing import PipelineEnvironment
from flink_tasks.worker.functions import Worker

REPLIES = "bench.replies"
EVENTS = "bench.events"


def _answer(
    typename: str,
    address_id: str,
    value_typename: str,
    payload: bytes,
    caller: tuple[str, str] | None,
) -> list[tuple[str, str, str, bytes]] | None:
    """A task function's answer, as the worker gives it: a result per request, a packed
    request (a task bucket's, `EngineSettings.task_buckets`) answered with one packed result."""
    if typename == wire.PIPELINE_FUNCTION:
        return None
    if value_typename != wire.TASK_REQUESTS:
        request = messages_pb2.TaskRequest.FromString(payload)
        return [(wire.PIPELINE_FUNCTION, _reply_to(request), wire.TASK_RESULT, _result(request))]
    results: dict[str, list[bytes]] = {}
    for packed in messages_pb2.TaskRequests.FromString(payload).requests:
        request = messages_pb2.TaskRequest.FromString(packed)
        results.setdefault(_reply_to(request), []).append(_result(request))
    return [
        (wire.PIPELINE_FUNCTION, reply_to, wire.TASK_RESULTS, _pack(chunk))
        for reply_to, chunk in results.items()
    ]


def _reply_to(request: messages_pb2.TaskRequest) -> str:
    return request.reply_id or request.pipeline_id


def _pack(chunk: list[bytes]) -> bytes:
    return messages_pb2.TaskResults(results=chunk).SerializeToString()


def _result(request: messages_pb2.TaskRequest) -> bytes:
    result = messages_pb2.TaskResult(
        task_id=request.task_id,
        attempt=request.attempt or 1,
        invocation=request.invocation,
        slot=request.slot,
    )
    if request.args.items:
        result.result.CopyFrom(request.args.items[0])  # echo: the answer of a trivial task
    else:
        result.result.none = True
    return result.SerializeToString()


async def pipeline_only(
    pipeline: PipelineBuilder, tasks_in_pipeline: int, max_batch: int
) -> dict[str, Any]:
    worker = Worker(
        bench_tasks.tasks,
        engine=EngineSettings(served_namespaces=frozenset(bench_tasks.tasks.namespaces)),
    )
    router = Router(worker.handle, encode, decode, _answer, max_batch=max_batch)
    request = messages_pb2.PipelineRequest(
        pipeline=pipeline.to_proto(),
        reply_topic=REPLIES,
        reply_id=uuid.uuid4().hex,
        events_topic=EVENTS,
    )
    router.route(
        wire.PIPELINE_FUNCTION, pipeline.id, wire.PIPELINE_REQUEST, request.SerializeToString()
    )
    replied = lambda: any(topic == REPLIES for topic, _ in router.egress)  # noqa: E731
    t0 = time.perf_counter()
    await router.run(replied)
    wall = time.perf_counter() - t0
    replies = [messages_pb2.Reply.FromString(p) for t, p in router.egress if t == REPLIES]
    if not replies or replies[0].WhichOneof("outcome") != "result":
        raise RuntimeError(f"pipeline did not complete: {replies[:1]}")
    out = router.summary(tasks_in_pipeline)
    out["wall_s"] = wall
    out["events"] = sum(1 for t, _ in router.egress if t == EVENTS)
    return out


async def end_to_end(pipeline: PipelineBuilder, tasks_in_pipeline: int) -> dict[str, Any]:
    async with PipelineEnvironment.in_process(bench_tasks.tasks, default_timeout=600) as env:
        t0 = time.perf_counter()
        await env.submit_async(pipeline)
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "completions_per_s": tasks_in_pipeline / wall}


def _shape(name: str, n: int) -> PipelineBuilder:
    if name == "unordered":  # in_parallel(..., ordered=False)
        return bench_tasks.fan_out_pipeline(n, ordered=False)
    return bench_tasks.fan_out_pipeline(n) if name == "fanout" else bench_tasks.chain_pipeline(n)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    shapes = _shapes(args.shapes)
    results: dict[str, Any] = {
        "protobuf": api_implementation.Type(),
        "python": sys.version.split()[0],
        "max_batch": args.max_batch,
        "reps": args.reps,
        "warmup": args.warmup,
        "shapes": {},
    }
    for name, n in shapes:
        entry: dict[str, Any] = {"n": n, "pipeline_only": [], "end_to_end": []}
        for rep in range(args.warmup + args.reps):
            gc.collect()
            po = await pipeline_only(_shape(name, n), n, args.max_batch)
            gc.collect()
            e2e = await end_to_end(_shape(name, n), n) if not args.skip_e2e else None
            if rep >= args.warmup:
                entry["pipeline_only"].append(po)
                if e2e:
                    entry["end_to_end"].append(e2e)
        for kind in ("pipeline_only", "end_to_end"):
            rates = [r["completions_per_s"] for r in entry[kind]]
            if rates:
                entry[f"{kind}_median_per_s"] = statistics.median(rates)
        results["shapes"][f"{name}:{n}"] = entry
        print(
            f"B4 flink-tasks [{results['protobuf']}] {name} n={n}: pipeline-only "
            f"{entry.get('pipeline_only_median_per_s', 0):,.0f}/s, in-process end-to-end "
            f"{entry.get('end_to_end_median_per_s', 0):,.0f}/s",
            flush=True,
        )
    if args.profile:
        for name, n in shapes:
            profiler = cProfile.Profile()
            pipeline = _shape(name, n)
            profiler.enable()
            await pipeline_only(pipeline, n, args.max_batch)
            profiler.disable()
            with open(f"{args.profile}.{name}-{n}.txt", "w") as fh:
                stats = pstats.Stats(profiler, stream=fh)
                stats.sort_stats("tottime").print_stats(30)
                stats.sort_stats("cumulative").print_stats(40)
    return results


def _shapes(text: str) -> list[tuple[str, int]]:
    return [(part.split(":")[0], int(part.split(":")[1])) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--shapes",
        default="fanout:10000,unordered:10000,fanout:1000,unordered:1000,chain:1000",
        help="comma list of fanout:N / unordered:N / chain:N",
    )
    parser.add_argument("--max-batch", type=int, default=1000)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--profile", default="")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
