"""A worker in a process of its own, for the fault-injection suite: it serves
`tests.faults.fault_tasks` (plus `tests.pipelines`) until it is killed.

    python -m tests.faults.worker_main --port 61001 [--host 127.0.0.1]

It is the product's `Worker` and its aiohttp app (`flink_tasks.worker.http.create_app`) with one
addition for the tests: `POST /_faults {"mode": "error"|"slow"|"none", "seconds": s, "delay": d}`
makes the StateFun route answer HTTP 500 (mode "error") or wait `d` seconds before answering
(mode "slow") for the next `s` seconds, which is how a failing proxy or an overloaded worker looks
to StateFun. Counters are at /metrics, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from flink_tasks import FlinkTasks
from flink_tasks.worker import Worker
from flink_tasks.worker.http import LISTEN_BACKLOG, create_app
from flink_tasks.worker.serve import report_sink
from tests.faults.fault_tasks import tasks as fault_tasks
from tests.faults.long_tasks import tasks as long_tasks
from tests.pipelines import tasks as test_tasks

ALL_TASKS = FlinkTasks().include(test_tasks).include(fault_tasks).include(long_tasks)

_FAULT = web.AppKey("fault", dict)


@web.middleware
async def _inject_faults(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    fault = request.app[_FAULT]
    if request.path.startswith("/statefun/") and time.monotonic() < fault["until"]:
        fault["hits"] += 1
        if fault["mode"] == "error":
            await request.read()
            return web.Response(status=500, text="injected fault: proxy error")
        if fault["mode"] == "slow":
            await asyncio.sleep(fault["delay"])
    return await handler(request)


async def _set_fault(request: web.Request) -> web.Response:
    body = await request.json()
    fault = request.app[_FAULT]
    hits = fault["hits"]
    fault.update(
        mode=body.get("mode", "none"),
        until=time.monotonic() + float(body.get("seconds", 0)),
        delay=float(body.get("delay", 0)),
        hits=0,
    )
    return web.json_response({"previous_hits": hits})


async def _get_fault(request: web.Request) -> web.Response:
    fault = request.app[_FAULT]
    return web.json_response({"mode": fault["mode"], "hits": fault["hits"]})


def build_app(worker: Worker) -> web.Application:
    app = create_app(worker)
    app.middlewares.append(_inject_faults)
    app[_FAULT] = {"mode": "none", "until": 0.0, "delay": 0.0, "hits": 0}
    app.router.add_post("/_faults", _set_fault)
    app.router.add_get("/_faults", _get_fault)
    return app


async def serve(host: str, port: int, egress_topics: list[str]) -> None:
    # the Worker's default engine settings read FLINK_TASKS_TASK_BUCKETS and
    # FLINK_TASKS_INLINE_CHAIN_STEPS as `flink-tasks serve` does (pytest --task-buckets sets one)
    worker = Worker(ALL_TASKS, egress_topics=egress_topics, reports=report_sink())
    runner = web.AppRunner(build_app(worker), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True, backlog=LISTEN_BACKLOG).start()
    logging.getLogger(__name__).info("fault-suite worker serving on %s:%d", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await worker.drain(5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--egress-topic", action="append", default=[], help="a reply/events topic (repeat)"
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(args.host, args.port, args.egress_topic))


if __name__ == "__main__":
    main()
