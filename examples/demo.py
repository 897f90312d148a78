"""`make demo`: start Kafka, StateFun and a worker, run the seed pipelines, print results, stop."""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from examples.seed import EXAMPLES, multiply, tasks
from flink_tasks.runtime import LocalRuntimeSettings
from flink_tasks.testing import PipelineEnvironment


async def main() -> int:
    logs = LocalRuntimeSettings.from_env().logs_dir
    print(f"Starting Kafka, StateFun on Flink and a worker; logs in {logs}/")
    started = time.perf_counter()
    failures = 0
    async with PipelineEnvironment.start_local(tasks) as env:
        print(f"Ready in {time.perf_counter() - started:.1f} s\n")
        for name, (make_pipeline, expected) in EXAMPLES.items():
            pipeline = make_pipeline()
            began = time.perf_counter()
            result = await env.submit_async(pipeline)
            elapsed = time.perf_counter() - began
            shown = result
            if isinstance(result, list) and len(result) > 8:
                shown = f"[{len(result)} items: {result[0]}, {result[1]}, ... {result[-1]}]"
            status = "ok" if result == expected else f"UNEXPECTED (expected {expected!r})"
            failures += result != expected
            print(f"{name:26} {shown!s:48} {elapsed * 1000:8.0f} ms  {status}")
        last = await env.submit_async(multiply.send(3, 2))
    # leaving the environment closed its Kafka client first, then stopped StateFun and Kafka
    print("\nStopped Kafka, StateFun and the worker.")
    print("multiply.send(3, 2) ->", last)
    return 1 if failures else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.ERROR)  # the Kafka client's own timing chatter
    sys.exit(asyncio.run(main()))
