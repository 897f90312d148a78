"""Steady load in the users' topology: what a pipeline costs when a service submits all day.

Single-task pipelines `inc.send(i)` at a fixed rate from this process (its own
`FlinkTasksClient`) against `flink-tasks serve --workers 2`, for long enough that the delayed
messages of the first ones (their stall checks and retention expiries, shortened here to
`--retention` for both) come due inside the measured window, as they do a day later in
production. A burst (B5) never sees them. Reports, over the window, the CPU of each process
group and the pipeline function's messages per pipeline (serve's /metrics). A diagnosis, not
part of `make bench`: `python -m bench.steady --out FILE [--rate 100 --seconds 70 --retention 30]`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.request
from concurrent.futures import wait
from pathlib import Path
from typing import Any

from bench import tasks as bench_tasks
from bench import topology, topology_client

log = logging.getLogger("bench.steady")


def _pipeline_messages(top: topology.Topology) -> float:
    url = f"http://127.0.0.1:{top.settings.worker_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    pattern = r"^flink_tasks_pipeline_messages_total\{[^}]*\} (\S+)$"
    return sum(float(value) for value in re.findall(pattern, text, re.M))


def measure(
    top: topology.Topology, rate: float, seconds: float, window_from: float
) -> dict[str, Any]:
    client = topology_client.make_client(top.spec("steady", index=0))
    assert top.cpu is not None
    try:
        futures, sent, start = [], 0, time.monotonic()
        marked: tuple[float, int, float] | None = None  # when, pipelines sent, messages so far
        while (now := time.monotonic()) - start < seconds:
            if now < start + sent / rate:
                time.sleep(start + sent / rate - now)
                continue
            futures.append(client.submit(bench_tasks.inc.send(sent)))
            sent += 1
            if marked is None and now - start >= window_from:
                top.cpu.mark()
                marked = (now, sent, _pipeline_messages(top))
        assert marked is not None, "--seconds must be longer than the window's start"
        cpu, messages = top.cpu.since(), _pipeline_messages(top)
        in_window = sent - marked[1]
        wait(futures, timeout=120)
        return {
            "pipelines": sent,
            "completed": sum(1 for f in futures if f.done() and f.exception() is None),
            "window_s": round(time.monotonic() - marked[0], 1),
            "window_pipelines": in_window,
            "cpu_ms_per_pipeline": {k: round(v * 1000 / in_window, 3) for k, v in cpu.items()},
            "pipeline_messages_per_pipeline": round((messages - marked[2]) / in_window, 3),
        }
    finally:
        client.close()


def main() -> None:
    parser = topology.build_parser(__doc__)
    parser.add_argument("--rate", type=float, default=100, help="pipelines per second")
    parser.add_argument("--seconds", type=float, default=70)
    parser.add_argument(
        "--retention", type=float, default=30, help="retention and stall timeout of serve (s)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    for var in ("FLINK_TASKS_RETENTION", "FLINK_TASKS_STALL_TIMEOUT"):
        os.environ[var] = f"{args.retention:g}s"  # read by serve, which inherits them
    top = topology.Topology(args)
    try:
        top.start()
        result = {
            "rate": args.rate,
            "seconds": args.seconds,
            "retention_s": args.retention,
            **measure(top, args.rate, args.seconds, window_from=args.retention + 5),
        }
    finally:
        top.stop()
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
