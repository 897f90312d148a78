# ruff: noqa: E501
"""B4, statefun-tasks side: its pure-Python pipeline engine (0.9.93), in-process, driven the same
way as flink-tasks' (bench._router): `ToFunction` batches into the SDK's request-reply handler,
task requests answered at once by the router (no user code), results batched per address.

Runs in bench/.venvs/statefun-tasks (its own dependency versions):
  bench/.venvs/statefun-tasks/bin/python -m bench.peers.sft_b4 --out FILE [options]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from typing import Any

from google.protobuf.internal import api_implementation
from statefun import RequestReplyHandler, StatefulFunctions
from statefun_tasks import DefaultSerialiser, FlinkTasks, in_parallel
from statefun_tasks.messages_pb2 import TaskRequest
from statefun_tasks.type_helpers import _create_task_result
from statefun_tasks.types import TASK_REQUEST_TYPE, TASK_RESULT_TYPE

from bench._router import Router, decode, encode

FUNCTION = "bench/worker"
REPLIES = "bench.replies"
RUN_PIPELINE = "__builtins.run_pipeline"

tasks = FlinkTasks(
    default_namespace="bench", default_worker_name="worker", egress_type_name="bench/egress"
)
serialiser = DefaultSerialiser()


@tasks.bind()
def inc(x):
    return x + 1


def answer(
    typename: str,
    address_id: str,
    value_typename: str,
    payload: bytes,
    caller: tuple[str, str] | None,
) -> list[tuple[str, str, str, bytes]] | None:
    if value_typename != TASK_REQUEST_TYPE.typename:
        return None
    request = TaskRequest()
    request.ParseFromString(payload)
    if request.type == RUN_PIPELINE:
        return None  # the pipeline itself: the engine under test
    args, _kwargs, state = serialiser.deserialise_request(request)
    value = args[0] if isinstance(args, (tuple, list)) and args else args
    result = _create_task_result(request)
    serialiser.serialise_result(result, value, state)
    result.invocation_id = request.invocation_id  # as FlinkTasks.emit_result does
    if request.HasField("reply_address"):
        target = (
            f"{request.reply_address.namespace}/{request.reply_address.type}",
            request.reply_address.id,
        )
    else:
        assert caller is not None
        target = caller
    return [(target[0], target[1], TASK_RESULT_TYPE.typename, result.SerializeToString())]


def _shape(name: str, n: int) -> Any:
    if name == "fanout":
        return in_parallel([inc.send(i) for i in range(n)])
    pipeline = inc.send(0)
    for _ in range(n - 1):
        pipeline = pipeline.continue_with(inc)
    return pipeline


async def pipeline_only(name: str, n: int, max_batch: int) -> dict[str, Any]:
    functions = StatefulFunctions()

    async def worker(context: Any, message: Any) -> None:
        await tasks.run_async(context, message)

    functions.register(FUNCTION, worker, tasks.value_specs())
    handler = RequestReplyHandler(functions)
    router = Router(handler.handle_async, encode, decode, answer, max_batch=max_batch)
    pipeline = _shape(name, n)
    request = pipeline.to_task_request(serialiser)
    request.reply_topic = REPLIES
    router.route(FUNCTION, request.id, TASK_REQUEST_TYPE.typename, request.SerializeToString())
    t0 = time.perf_counter()
    await router.run(lambda: bool(router.egress))
    wall = time.perf_counter() - t0
    if not router.egress:
        raise RuntimeError("statefun-tasks pipeline did not reply")
    out = router.summary(n)
    out["wall_s"] = wall
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import statefun_tasks

    results: dict[str, Any] = {
        "protobuf": api_implementation.Type(),
        "python": sys.version.split()[0],
        "versions": {"statefun-tasks": getattr(statefun_tasks, "__version__", "0.9.93")},
        "max_batch": args.max_batch,
        "reps": args.reps,
        "warmup": args.warmup,
        "shapes": {},
    }
    for name, n in _shapes(args.shapes):
        entry: dict[str, Any] = {"n": n, "pipeline_only": []}
        for rep in range(args.warmup + args.reps):
            gc.collect()
            po = await pipeline_only(name, n, args.max_batch)
            if rep >= args.warmup:
                entry["pipeline_only"].append(po)
        entry["pipeline_only_median_per_s"] = statistics.median(
            r["completions_per_s"] for r in entry["pipeline_only"]
        )
        results["shapes"][f"{name}:{n}"] = entry
        print(
            f"B4 statefun-tasks [{results['protobuf']}] {name} n={n}: {entry['pipeline_only_median_per_s']:,.0f}/s",
            flush=True,
        )
    return results


def _shapes(text: str) -> list[tuple[str, int]]:
    return [(part.split(":")[0], int(part.split(":")[1])) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--shapes", default="chain:1000,fanout:1000", help="comma list of fanout:N / chain:N"
    )
    parser.add_argument("--max-batch", type=int, default=1000)
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
