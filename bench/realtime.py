"""B1, B2, B3 on the real local runtime (Kafka + StateFun MiniCluster + this process's worker).

Own run dir and ports (never the defaults that others use). Phases, each its own runtime:
  alo: at-least-once egress: B1 fan-out throughput, B2 chain latency, B3 scale;
  eo:  exactly-once egress: B2 chain latency (output visible once per checkpoint).
Run: python -m bench.realtime --out FILE [options]; see --help.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from google.protobuf.internal import api_implementation

from bench import tasks as bench_tasks
from bench._clients import percentile
from flink_tasks.config import INLINE_CHAIN_STEPS_VAR
from flink_tasks.runtime import LocalRuntimeSettings
from flink_tasks.testing import PipelineEnvironment
from flink_tasks.worker import PoolSettings

log = logging.getLogger("bench.realtime")


_buffer_timeout_ms: int | None = None  # None: the project's default (LocalRuntimeSettings)


def _set_buffer_timeout(ms: int | None) -> None:
    """Flink's `execution.buffer-timeout` for the runtimes started from now on."""
    global _buffer_timeout_ms
    _buffer_timeout_ms = ms


def settings_for(
    args: argparse.Namespace, semantic: str, checkpoint_ms: int, name: str
) -> LocalRuntimeSettings:
    # A fresh run dir per phase: a new consumer group on old topics would replay every earlier
    # request (the ingress starts at `earliest`), and old state would be checkpointed again.
    run_dir = Path(args.run_dir) / name
    shutil.rmtree(run_dir, ignore_errors=True)
    return LocalRuntimeSettings.from_env(
        run_dir=run_dir,
        kafka_port=args.kafka_port,
        kafka_controller_port=args.kafka_controller_port,
        rest_port=args.rest_port,
        worker_port=args.worker_port,
        delivery_semantic=semantic,
        checkpoint_interval=timedelta(milliseconds=checkpoint_ms),
        consumer_group_id=f"flink-tasks-bench-{semantic}",
        **(
            {"buffer_timeout": timedelta(milliseconds=_buffer_timeout_ms)}
            if _buffer_timeout_ms is not None
            else {}
        ),
    )


async def b1(env: PipelineEnvironment, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = args.b1_n
    for label, mp in (("none", 0), ("100", 100)):
        runs = []
        for rep in range(args.warmup + args.reps):
            pipeline = bench_tasks.fan_out_pipeline(n, max_parallelism=mp)
            t0 = time.perf_counter()
            result = await env.submit_async(pipeline, timeout=args.timeout)
            wall = time.perf_counter() - t0
            assert len(result) == n and result[-1] == n, result[-3:]
            if rep >= args.warmup:
                runs.append(wall)
        rates = [n / w for w in runs]
        out[label] = {
            "n": n,
            "wall_s": runs,
            "tasks_per_s": rates,
            "median_tasks_per_s": statistics.median(rates),
        }
        log.warning(
            "B1 flink-tasks max_parallelism=%s: %.0f tasks/s (median of %d)",
            label,
            statistics.median(rates),
            len(runs),
        )
    return out


async def b2(env: PipelineEnvironment, args: argparse.Namespace, label: str) -> dict[str, Any]:
    latencies = []
    for rep in range(args.b2_warmup + args.b2_runs):
        pipeline = bench_tasks.chain_pipeline(args.b2_steps)
        t0 = time.perf_counter()
        result = await env.submit_async(pipeline, timeout=args.timeout)
        wall = time.perf_counter() - t0
        assert result == args.b2_steps, result
        if rep >= args.b2_warmup:
            latencies.append(wall * 1000)
    out = {
        "steps": args.b2_steps,
        "runs": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": statistics.fmean(latencies),
        "min_ms": min(latencies),
        "latencies_ms": [round(x, 3) for x in latencies],  # for the CDF plot
    }
    log.warning(
        "B2 flink-tasks %s: p50 %.1f ms p95 %.1f ms p99 %.1f ms",
        label,
        out["p50_ms"],
        out["p95_ms"],
        out["p99_ms"],
    )
    return out


async def b3(env: PipelineEnvironment, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in args.b3_sizes:
        reps = args.reps if n <= 10_000 else args.b3_big_reps
        variants = (("auto", 0), ("num_stages", args.b3_num_stages))
        for variant, stages in [v for v in variants if v[0] in args.b3_variants]:
            runs = []
            for rep in range((1 if n <= 10_000 else 0) + reps):
                pipeline = bench_tasks.b3_pipeline(n, stages)
                t0 = time.perf_counter()
                result = await env.submit_async(pipeline, timeout=args.timeout)
                wall = time.perf_counter() - t0
                assert result == n, result
                if rep >= (1 if n <= 10_000 else 0):
                    runs.append(wall)
            median = statistics.median(runs)
            out[f"{variant}/{n}"] = {
                "n": n,
                "variant": variant,
                "num_stages": stages,
                "wall_s": runs,
                "median_wall_s": median,
                "us_per_child": median / n * 1e6,
            }
            log.warning(
                "B3 flink-tasks %s n=%d: %.2f s, %.0f us/child",
                variant,
                n,
                median,
                median / n * 1e6,
            )
    return out


async def phase(
    args: argparse.Namespace, semantic: str, checkpoint_ms: int, work: list[str], name: str
) -> dict[str, Any]:
    settings = settings_for(args, semantic, checkpoint_ms, name)
    out: dict[str, Any] = {"delivery_semantic": semantic, "checkpoint_interval_ms": checkpoint_ms}
    t0 = time.perf_counter()
    pool = PoolSettings(kind=args.pool, size=args.pool_size)
    out["pool"] = args.pool
    async with PipelineEnvironment.start_local(
        bench_tasks.tasks, settings=settings, pool=pool
    ) as env:
        out["startup_s"] = time.perf_counter() - t0
        log.warning("runtime up (%s) in %.1f s", semantic, out["startup_s"])
        for _ in range(3):  # warm-up: first calls per function type, JIT, Kafka metadata
            await env.submit_async(bench_tasks.fan_out_pipeline(200), timeout=args.timeout)
            await env.submit_async(bench_tasks.chain_pipeline(args.b2_steps), timeout=args.timeout)
        if "b1" in work:
            out["b1"] = await b1(env, args)
        if "b2" in work:
            out["b2"] = await b2(env, args, semantic)
        if "b3" in work:
            out["b3"] = await b3(env, args)
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    _set_buffer_timeout(args.buffer_timeout_ms)
    os.environ[INLINE_CHAIN_STEPS_VAR] = str(args.inline_chain_steps)  # start_local's default
    results: dict[str, Any] = {
        "inline_chain_steps": args.inline_chain_steps,
        "protobuf": api_implementation.Type(),
        "reps": args.reps,
        "warmup": args.warmup,
        "buffer_timeout_ms": args.buffer_timeout_ms,
        "ports": {
            "kafka": args.kafka_port,
            "controller": args.kafka_controller_port,
            "rest": args.rest_port,
            "worker": args.worker_port,
        },
    }
    work = set(args.only.split(",")) if args.only else {"b1", "b2", "b3", "eo", "tuned"}
    alo_work = [w for w in ("b1", "b2", "b3") if w in work]
    if alo_work:
        results["alo"] = await phase(args, "at-least-once", args.checkpoint_ms, alo_work, "alo")
        _save(args, results)
    if "eo" in work:
        results["eo"] = await phase(args, "exactly-once", args.eo_checkpoint_ms, ["b2"], "eo")
        _save(args, results)
    if "tuned" in work and args.tuned_buffer_timeout_ms is not None:
        # B2 again with Flink's stock 100 ms buffer timeout: what the project's 5 ms default buys
        _set_buffer_timeout(args.tuned_buffer_timeout_ms)
        results["tuned"] = await phase(args, "at-least-once", args.checkpoint_ms, ["b2"], "tuned")
        results["tuned"]["buffer_timeout_ms"] = args.tuned_buffer_timeout_ms
        _save(args, results)
    return results


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", default="/tmp/ft-bench-rt")
    parser.add_argument("--kafka-port", type=int, default=21092)
    parser.add_argument("--kafka-controller-port", type=int, default=21093)
    parser.add_argument("--rest-port", type=int, default=21081)
    parser.add_argument("--worker-port", type=int, default=21000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    add_runtime_options(parser)
    parser.add_argument("--only", default="", help="comma list of b1,b2,b3,eo,tuned (default: all)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--checkpoint-ms", type=int, default=1000)
    parser.add_argument("--eo-checkpoint-ms", type=int, default=500)
    parser.add_argument(
        "--buffer-timeout-ms",
        type=int,
        default=None,
        help="Flink execution.buffer-timeout (default: the project's, 5 ms)",
    )
    parser.add_argument(
        "--tuned-buffer-timeout-ms",
        type=int,
        default=100,
        help="B2 once more with this Flink buffer timeout (phase 'tuned'; Flink's stock 100 ms)",
    )
    parser.add_argument(
        "--pool",
        choices=["thread", "process"],
        default="thread",
        help="where the worker runs sync task bodies (serve's default is process)",
    )
    parser.add_argument("--pool-size", type=int, default=None)
    parser.add_argument(
        "--inline-chain-steps",
        type=int,
        default=0,
        help="EngineSettings.inline_chain_steps of the worker (0: off, the default)",
    )
    parser.add_argument("--b1-n", type=int, default=1000)
    parser.add_argument("--b2-steps", type=int, default=10)
    parser.add_argument("--b2-runs", type=int, default=200)
    parser.add_argument("--b2-warmup", type=int, default=20)
    parser.add_argument(
        "--b3-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 10_000, 100_000]
    )
    parser.add_argument("--b3-num-stages", type=int, default=10)
    parser.add_argument(
        "--b3-variants", type=lambda s: s.split(","), default=["auto", "num_stages"]
    )
    parser.add_argument(
        "--b3-big-reps", type=int, default=1, help="repetitions above 10,000 children"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_run_cancellable(args))


async def _run_cancellable(args: argparse.Namespace) -> None:
    """SIGTERM cancels the run, so that `start_local` stops the runtime it started."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    results = await main_async(args)
    _save(args, results)


def _save(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Written after each phase, so that a later failure keeps what was measured."""
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
