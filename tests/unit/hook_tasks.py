"""Tasks and hooks of the hook and log tests (imported by pool children by MODULE:ATTR)."""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter

from flink_tasks import FlinkTasks
from flink_tasks._proto import messages_pb2
from flink_tasks.context import TaskContext
from flink_tasks.worker.hooks import TaskMiddleware

tasks = FlinkTasks()
log = logging.getLogger("tests.hook_tasks")

#: what a request-scoped database session would be: set by the middleware, read by the body
SESSION: contextvars.ContextVar[str | None] = contextvars.ContextVar("session", default=None)

FINISHED = Counter("hook_tasks_finished", "Tasks an observer hook saw finish.", ["task_type"])


class RolledBackError(Exception):
    """The middleware rolled the session back because the body failed."""


class DbSession(TaskMiddleware):
    """Opens a session around every body, where the body runs; rolls back on failure."""

    def around_sync(self, ctx: TaskContext, proceed: Callable[[], Any]) -> Any:
        token = SESSION.set(f"session of {ctx.task_id} in pid {os.getpid()}")
        log.info("session opened")
        try:
            return proceed()
        except Exception as exc:
            raise RolledBackError(f"rolled back: {exc}") from exc
        finally:
            SESSION.reset(token)

    async def around_async(self, ctx: TaskContext, proceed: Callable[[], Awaitable[Any]]) -> Any:
        token = SESSION.set(f"async session of {ctx.task_id}")
        try:
            return await proceed()
        except Exception as exc:
            raise RolledBackError(f"rolled back: {exc}") from exc
        finally:
            SESSION.reset(token)


class Observer:
    """Counts finished tasks in the worker process (custom metrics from an observer hook)."""

    def task_finished(
        self, request: messages_pb2.TaskRequest, result: messages_pb2.TaskResult
    ) -> None:
        FINISHED.labels(request.task_type).inc()


hooks = [DbSession(), Observer()]


@tasks.bind()
def in_session() -> str:
    log.info("sync body ran")
    return f"{SESSION.get()}, body in pid {os.getpid()}"


@tasks.bind()
async def in_session_async() -> str:
    log.info("async body ran")
    return f"{SESSION.get()}"


@tasks.bind()
def fails() -> None:
    log.warning("about to fail")
    raise ValueError("no such row")
