"""The worker's HTTP transport: StateFun posts request-reply batches here."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from flink_tasks.worker.functions import Worker

logger = logging.getLogger(__name__)

# StateFun's payload_max_bytes default is 32 MiB; accept at least that (aiohttp's default is 1 MiB).
MAX_REQUEST_BYTES = 64 * 1024 * 1024
# StateFun keeps up to 1,024 connections to an endpoint (its pool_size) and, after a worker
# restart, opens them all at once: a listen queue that short (aiohttp's default is 128) drops
# the SYNs, the connects time out and every waiting request fails and retries.
LISTEN_BACKLOG = 1024
WORKER_KEY = web.AppKey("worker", Worker)


def create_app(worker: Worker) -> web.Application:
    """An aiohttp app: POST /statefun/{function}, GET /healthz, GET /metrics."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[WORKER_KEY] = worker
    app.router.add_post("/statefun/{function}", _statefun)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/metrics", _metrics)
    return app


async def _statefun(request: web.Request) -> web.Response:
    worker = request.app[WORKER_KEY]
    body = await request.read()
    try:
        reply = await worker.handle(body)
    except Exception:
        # Only protocol-level failures get here (task failures are results); StateFun retries.
        worker.metrics.rejected_messages.labels("protocol_error").inc()
        logger.exception(
            "could not handle a StateFun request for %s", request.match_info["function"]
        )
        return web.Response(status=500, text="flink-tasks could not handle this request")
    return web.Response(body=reply, content_type="application/octet-stream")


async def _health(request: web.Request) -> web.Response:
    worker = request.app[WORKER_KEY]
    return web.json_response({"status": "ok", "tasks": len(worker.tasks.task_types)})


async def _metrics(request: web.Request) -> web.Response:
    # merging the processes' files reads disk: not on the event loop
    body = await asyncio.to_thread(request.app[WORKER_KEY].metrics.render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
