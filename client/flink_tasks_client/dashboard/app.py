"""The dashboard's web app (aiohttp): one static page, a JSON API and a server-sent event stream.

- ``GET /``: the page (HTML, CSS and a small script, no build step, nothing fetched elsewhere);
- ``GET /api/pipelines``: root pipelines, newest update first; ``GET /api/pipelines/{id}``: one
  pipeline's tree, progress and (if it failed) the failure with its traceback;
- ``GET /api/stream``: server-sent events, one ``data: <version>`` whenever what the board knows
  changed (the page then fetches what it shows);
- ``POST /api/pipelines/{id}/{pause|unpause|cancel}``: the client's actions. A POST must carry
  the header ``X-Flink-Tasks-Dashboard: 1``: a browser sends it cross-origin only after a CORS
  preflight that this app never allows, so another web page cannot press the buttons.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
from datetime import timedelta
from typing import Any

from aiohttp import web

from flink_tasks.errors import ActionError, ClientError, PipelineNotFoundError, TaskError
from flink_tasks.types import PipelineStatus
from flink_tasks_client._client import FlinkTasksClient
from flink_tasks_client.dashboard.follow import EventFollower
from flink_tasks_client.dashboard.model import Board
from flink_tasks_client.settings import ClientSettings

logger = logging.getLogger(__name__)

ACTION_HEADER = "X-Flink-Tasks-Dashboard"
ACTIONS = ("pause", "unpause", "cancel")
#: how often a stream looks for changes (the page is redrawn at most this often)
STREAM_INTERVAL_S = 0.25
KEEPALIVE_S = 15.0

_BOARD = web.AppKey("board", Board)
_FOLLOWER = web.AppKey("follower", EventFollower)
_CLIENT = web.AppKey("client", FlinkTasksClient)
_STOPPING = web.AppKey("stopping", asyncio.Event)
_LIMIT = web.AppKey("limit", int)
_LOOKUPS = web.AppKey("lookups", dict)


def create_app(
    settings: ClientSettings, *, since: timedelta | None = timedelta(hours=1), limit: int = 200
) -> web.Application:
    """The dashboard for the pipelines of `settings` (their events since `since`)."""
    app = web.Application()
    board = Board(limit=max(limit * 2, 100))
    app[_BOARD] = board
    app[_FOLLOWER] = EventFollower(settings, board, since)
    app[_STOPPING] = asyncio.Event()
    app[_LIMIT] = limit
    app[_LOOKUPS] = {}

    async def start(app: web.Application) -> None:
        app[_CLIENT] = FlinkTasksClient(settings=settings)
        app[_FOLLOWER].start()

    async def shutdown(app: web.Application) -> None:
        app[_STOPPING].set()  # ends the open event streams

    async def cleanup(app: web.Application) -> None:
        await asyncio.to_thread(app[_FOLLOWER].stop)
        await app[_CLIENT].aclose()

    app.on_startup.append(start)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    app.router.add_get("/", page)
    app.router.add_get("/api/pipelines", pipelines)
    app.router.add_get("/api/pipelines/{id}", pipeline)
    app.router.add_post("/api/pipelines/{id}/{action}", action)
    app.router.add_get("/api/stream", stream)
    return app


_PAGE: bytes | None = None


async def page(request: web.Request) -> web.Response:
    global _PAGE
    if _PAGE is None:
        _PAGE = (importlib.resources.files(__package__) / "page.html").read_bytes()
    return web.Response(
        body=_PAGE,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
            "script-src 'unsafe-inline'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def pipelines(request: web.Request) -> web.Response:
    app = request.app
    follower = app[_FOLLOWER]
    return web.json_response(
        {
            "pipelines": app[_BOARD].summaries(app[_LIMIT]),
            "problem": follower.problem,
            "events_topic": follower.settings.events_topic,
            "events_read": follower.events_read,
        }
    )


async def pipeline(request: web.Request) -> web.Response:
    app = request.app
    pipeline_id = request.match_info["id"]
    board = app[_BOARD]
    root = board.get(pipeline_id)
    if root is None:
        raise web.HTTPNotFound(text=f"no events of pipeline {pipeline_id!r} were read")
    if root.status == PipelineStatus.FAILED and root.error is None:
        await _look_up_failure(app, pipeline_id)
    return web.json_response(board.detail(pipeline_id))


async def _look_up_failure(app: web.Application, pipeline_id: str) -> None:
    """The failure that ended a pipeline, from its result (once per pipeline)."""
    lookups: dict[str, asyncio.Future[None]] = app[_LOOKUPS]
    if pipeline_id not in lookups:
        lookups[pipeline_id] = asyncio.ensure_future(_fetch_failure(app, pipeline_id))
    await asyncio.shield(lookups[pipeline_id])


async def _fetch_failure(app: web.Application, pipeline_id: str) -> None:
    error: dict[str, str]
    try:
        await app[_CLIENT].get_result(pipeline_id, timeout=timedelta(seconds=10))
        return  # not failed (any more): re-run under the same id
    except TaskError as err:
        error = {
            "task_id": err.task_id,
            "task_type": err.type,
            "exception_type": err.exception_type,
            "message": err.exception_message,
            "traceback": err.stacktrace,
        }
    except (ClientError, PipelineNotFoundError) as err:
        app[_LOOKUPS].pop(pipeline_id, None)  # try again on the next request
        logger.warning("cannot look up the failure of %s: %s", pipeline_id, err)
        return
    app[_BOARD].set_error(pipeline_id, error)


async def action(request: web.Request) -> web.Response:
    if request.headers.get(ACTION_HEADER) != "1":
        raise web.HTTPForbidden(text=f"actions need the {ACTION_HEADER}: 1 header")
    name = request.match_info["action"]
    if name not in ACTIONS:
        raise web.HTTPNotFound(text=f"no action {name!r}; actions: {', '.join(ACTIONS)}")
    pipeline_id = request.match_info["id"]
    client = request.app[_CLIENT]
    call: Any = getattr(client, name)
    try:
        status = await call(pipeline_id, timeout=timedelta(seconds=30))
    except ActionError as err:
        return web.json_response({"error": str(err)}, status=409)
    except PipelineNotFoundError as err:
        return web.json_response({"error": str(err)}, status=404)
    except ClientError as err:
        return web.json_response({"error": str(err)}, status=503)
    logger.info("%s %s from the dashboard: %s", name, pipeline_id, status.name)
    return web.json_response({"status": status.name})


async def stream(request: web.Request) -> web.StreamResponse:
    app = request.app
    board, stopping = app[_BOARD], app[_STOPPING]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    seen, quiet = -1, 0.0
    try:
        while not stopping.is_set():
            if board.version != seen:
                seen = board.version
                await response.write(f"data: {seen}\n\n".encode())
                quiet = 0.0
            elif quiet >= KEEPALIVE_S:
                await response.write(b": keep-alive\n\n")
                quiet = 0.0
            try:
                await asyncio.wait_for(stopping.wait(), STREAM_INTERVAL_S)
            except asyncio.TimeoutError:  # not yet the builtin TimeoutError on 3.10
                quiet += STREAM_INTERVAL_S
    except ConnectionResetError:
        pass  # the page went away
    return response
