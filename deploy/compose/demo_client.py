"""The docker-compose demo client: submit the example pipelines over Kafka, print the results.

Settings come from FLINK_TASKS_* variables (deploy/compose/settings.env: bootstrap servers,
read_committed, timeouts). Exit code 0 when every example gave its expected result.
Run outside compose against the published port with, e.g.:

    FLINK_TASKS_BOOTSTRAP_SERVERS=localhost:19092 FLINK_TASKS_READ_COMMITTED=true \\
        python deploy/compose/demo_client.py
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from flink_tasks_client import ClientSettings, FlinkTasksClient

from examples.seed import EXAMPLES, multiply


async def main() -> int:
    settings = ClientSettings.from_env()
    print(f"connecting to Kafka at {settings.bootstrap_servers}", flush=True)
    failures = 0
    async with FlinkTasksClient(settings=settings) as client:
        for name, (make_pipeline, expected) in EXAMPLES.items():
            began = time.perf_counter()
            try:
                result = await client.submit_async(make_pipeline())
            except Exception as exc:  # report every example, then fail
                result = exc
            elapsed = time.perf_counter() - began
            ok = result == expected
            failures += not ok
            shown = result
            if isinstance(result, list) and len(result) > 8:
                shown = f"[{len(result)} items: {result[0]}, ..., {result[-1]}]"
            status = "ok" if ok else f"UNEXPECTED (expected {expected!r})"
            print(f"{name:26} {shown!s:48} {elapsed * 1000:8.0f} ms  {status}", flush=True)
        print("multiply.send(3, 2) ->", await client.submit_async(multiply.send(3, 2)), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(asyncio.run(main()))
