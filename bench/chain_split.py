"""Where a B2 chain's time goes on the real runtime (issue 16), step by step.

`start_local` (worker in this process), one runtime per Flink buffer timeout; in each, B2 chains
run one after another in alternating blocks with `EngineSettings.inline_chain_steps` off and on
(the same runtime, so both see the same machine). The worker is timed from inside: the whole
StateFun call (`Worker.handle`: parse, functions, reply), the pipeline function and the task
function (which awaits the task body). What is left of the submit-to-result latency is Flink,
Kafka, the HTTP transport and the client.

Run: python -m bench.chain_split --out FILE [--buffer-timeouts 5,1,0] [options]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from bench import realtime
from bench import tasks as bench_tasks
from bench._clients import percentile
from flink_tasks.testing import PipelineEnvironment
from flink_tasks.worker import PoolSettings, Worker

log = logging.getLogger("bench.chain_split")

# seconds spent and calls made in each timed part since the last `take()`
_spent: dict[str, float] = {}
_calls: dict[str, int] = {}


def _timed(name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def timed(*args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await fn(*args)
        finally:
            _spent[name] = _spent.get(name, 0.0) + time.perf_counter() - t0
            _calls[name] = _calls.get(name, 0) + 1

    return timed


def _instrument() -> None:
    """Time the worker's parts (class level: the endpoint binds the functions at construction)."""
    worker: Any = Worker
    worker.handle = _timed("call", Worker.handle)
    worker._pipeline_function = _timed("pipeline_fn", Worker._pipeline_function)
    worker._task_function = _timed("task_fn", Worker._task_function)


def _take() -> tuple[dict[str, float], dict[str, int]]:
    spent, calls = dict(_spent), dict(_calls)
    _spent.clear()
    _calls.clear()
    return spent, calls


async def _block(
    env: PipelineEnvironment, runs: int, steps: int, rows: list[dict[str, Any]]
) -> None:
    for _ in range(runs):
        _take()
        t0 = time.perf_counter()
        result = await env.submit_async(bench_tasks.chain_pipeline(steps), timeout=60)
        latency = time.perf_counter() - t0
        assert result == steps, result
        spent, calls = _take()
        rows.append(
            {
                "latency_ms": latency * 1000,
                **{f"{k}_ms": v * 1000 for k, v in spent.items()},
                **{f"{k}_calls": v for k, v in calls.items()},
            }
        )


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    lat = [r["latency_ms"] for r in rows]
    out: dict[str, Any] = {
        "runs": len(rows),
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
        "p99_ms": percentile(lat, 99),
        "mean_ms": statistics.fmean(lat),
    }
    for key in ("call", "pipeline_fn", "task_fn"):
        out[f"{key}_ms_mean"] = statistics.fmean(r.get(f"{key}_ms", 0.0) for r in rows)
        out[f"{key}_calls_mean"] = statistics.fmean(r.get(f"{key}_calls", 0) for r in rows)
    # the StateFun calls' own time minus the functions' = the adapter (parse, state, reply)
    out["adapter_ms_mean"] = (
        out["call_ms_mean"] - out["pipeline_fn_ms_mean"] - out["task_fn_ms_mean"]
    )
    out["outside_worker_ms_mean"] = out["mean_ms"] - out["call_ms_mean"]
    return out


async def _one_runtime(args: argparse.Namespace, buffer_ms: int) -> dict[str, Any]:
    realtime._set_buffer_timeout(buffer_ms)
    settings = realtime.settings_for(
        args, "at-least-once", args.checkpoint_ms, f"split-{buffer_ms}"
    )
    pool = PoolSettings(kind="thread")
    rows: dict[int, list[dict[str, Any]]] = {0: [], args.inline_steps: []}
    load_before = os.getloadavg()
    async with PipelineEnvironment.start_local(
        bench_tasks.tasks, settings=settings, pool=pool
    ) as env:
        worker = env.worker
        assert worker is not None
        base = worker.engine
        for _ in range(3):
            await env.submit_async(bench_tasks.chain_pipeline(args.steps), timeout=60)
        for block in range(args.blocks):
            for steps in (0, args.inline_steps) if block % 2 == 0 else (args.inline_steps, 0):
                worker.engine = replace(base, inline_chain_steps=steps)
                await _block(env, args.warmup, args.steps, [])
                await _block(env, args.runs_per_block, args.steps, rows[steps])
    out = {
        "buffer_timeout_ms": buffer_ms,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "off": _summary(rows[0]),
        "on": _summary(rows[args.inline_steps]),
    }
    for mode in ("off", "on"):
        s = out[mode]
        log.warning(
            "buffer %d ms, inline %s: p50 %.1f p95 %.1f p99 %.1f ms; per chain: calls %.1f ms "
            "(pipeline fn %.1f ms in %.1f calls, task fn %.1f ms in %.1f calls, adapter %.1f), "
            "outside the worker %.1f ms",
            buffer_ms,
            mode,
            s["p50_ms"],
            s["p95_ms"],
            s["p99_ms"],
            s["call_ms_mean"],
            s["pipeline_fn_ms_mean"],
            s["pipeline_fn_calls_mean"],
            s["task_fn_ms_mean"],
            s["task_fn_calls_mean"],
            s["adapter_ms_mean"],
            s["outside_worker_ms_mean"],
        )
    return out


async def main_async(args: argparse.Namespace) -> None:
    _instrument()
    results: dict[str, Any] = {"steps": args.steps, "inline_steps": args.inline_steps, "phases": []}
    for buffer_ms in args.buffer_timeouts:
        results["phases"].append(await _one_runtime(args, buffer_ms))
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    realtime.add_runtime_options(parser)
    parser.add_argument(
        "--buffer-timeouts", type=lambda s: [int(x) for x in s.split(",")], default=[5, 1, 0]
    )
    parser.add_argument("--checkpoint-ms", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--inline-steps", type=int, default=9)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--runs-per-block", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
