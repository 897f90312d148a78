"""A flink-tasks client process of the users'-topology benchmarks (started by bench.topology).

    python -m bench.topology_client '{"mode": "b5", "n": 2500, ...}'

Its own `FlinkTasksClient`, its own OS process; the protocol with the parent is
bench._clients' (READY / GO, a JSON result file). Modes:
  b5: `n` single-task pipelines `inc.send(i)` submitted back to back (all in flight at once),
      each one's submit-to-result latency taken when the client's I/O thread resolves it;
  b1: bench.realtime's fan-out throughput; b2: a chain's latency, one run after another;
  b3: bench.realtime's orchestrator fan-out + count, one size.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from concurrent.futures import Future
from datetime import timedelta
from typing import Any

from flink_tasks_client import FlinkTasksClient

from bench import _clients, realtime
from bench import tasks as bench_tasks

log = logging.getLogger("bench.topology_client")


def make_client(spec: dict[str, Any]) -> FlinkTasksClient:
    """A ready `FlinkTasksClient` for a `Topology.spec` (closed again if it cannot start)."""
    client = FlinkTasksClient(
        bootstrap_servers=spec["bootstrap_servers"],
        request_topic=spec["requests_topic"],
        action_topic=spec["actions_topic"],
        reply_topic=spec["replies_topic"],
        events_topic=spec["events_topic"],
        default_timeout=timedelta(seconds=spec["timeout"]),
        read_committed=False,  # the at-least-once egress
        pipeline_reuse=spec["reuse"],
        client_id=f"bench-{spec['mode']}-{spec['index']}",
    )
    try:
        client.wait_ready()
    except BaseException:
        client.close()
        raise
    return client


def b5(client: FlinkTasksClient, spec: dict[str, Any]) -> dict[str, Any]:
    n, offset = spec["n"], spec["offset"]
    for i in range(spec["warmup"]):  # connections, metadata, the first call per function
        assert client.submit_sync(bench_tasks.inc.send(i), timeout=spec["timeout"]) == i + 1
    went = _clients.handshake()
    done_at = [0.0] * n
    results: list[Any] = [None] * n
    remaining = [n]
    lock = threading.Lock()
    all_done = threading.Event()

    def on_done(index: int, fut: Future[Any]) -> None:
        done_at[index] = time.time()  # in the client's I/O thread, as the reply is read
        results[index] = fut.exception() or fut.result()
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                all_done.set()

    submitted_at = [0.0] * n
    for index in range(n):
        submitted_at[index] = time.time()
        fut = client.submit(bench_tasks.inc.send(offset + index), timeout=spec["timeout"])
        fut.add_done_callback(lambda f, index=index: on_done(index, f))
    if not all_done.wait(spec["timeout"] + 30):
        raise TimeoutError(f"{remaining[0]} of {n} pipelines had no result")
    wrong = [(i, r) for i, r in enumerate(results) if r != offset + i + 1]
    if wrong:
        raise AssertionError(f"{len(wrong)} wrong results, e.g. {wrong[:3]}")
    return {
        "n": n,
        "first_submit": submitted_at[0],
        "last_submit": submitted_at[-1],
        "last_result": max(done_at),
        "latencies_ms": [(d - s) * 1000 for s, d in zip(submitted_at, done_at, strict=True)],
        "cpu_s": time.process_time() - went,
    }


def _warm_up(client: FlinkTasksClient, spec: dict[str, Any]) -> None:
    for _ in range(3):  # as bench.realtime does per runtime
        client.submit_sync(bench_tasks.fan_out_pipeline(200), timeout=spec["timeout"])
        client.submit_sync(bench_tasks.chain_pipeline(spec["b2_steps"]), timeout=spec["timeout"])


def b2(client: FlinkTasksClient, spec: dict[str, Any]) -> dict[str, Any]:
    steps = spec["b2_steps"]
    latencies = []
    for rep in range(spec["b2_warmup"] + spec["b2_runs"]):
        t0 = time.perf_counter()
        result = client.submit_sync(bench_tasks.chain_pipeline(steps), timeout=spec["timeout"])
        wall = time.perf_counter() - t0
        assert result == steps, result
        if rep >= spec["b2_warmup"]:
            latencies.append(wall * 1000)
    out = {"steps": steps, **_clients.latency_summary(latencies)}
    out["latencies_ms"] = [round(x, 3) for x in latencies]
    return out


def _realtime_args(spec: dict[str, Any]) -> argparse.Namespace:
    return argparse.Namespace(
        b1_n=spec["b1_n"],
        warmup=1,
        reps=spec["reps"],
        timeout=spec["timeout"],
        b3_sizes=spec.get("b3_sizes", []),
        b3_big_reps=1,
        b3_num_stages=10,
        b3_variants=spec.get("b3_variants", ["auto", "num_stages"]),
    )


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    client = make_client(spec)
    try:
        mode = spec["mode"]
        if mode == "b5":
            out = b5(client, spec)
        else:
            _warm_up(client, spec)
            went = _clients.handshake()
            if mode == "b2":
                out = b2(client, spec)
            else:
                import asyncio

                # bench.realtime's loops take anything with `submit_async(pipeline, timeout=)`
                run = realtime.b1 if mode == "b1" else realtime.b3
                out = asyncio.run(run(client, _realtime_args(spec)))  # type: ignore[arg-type]
            out["cpu_s"] = time.process_time() - went
    finally:
        client.close()
    with open(spec["out"], "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
