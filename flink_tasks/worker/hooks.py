"""Worker hooks: observers of task attempts, and middleware that wraps task bodies.

A hook is any object; it takes part in whatever of these methods it defines:

- **observers** ``task_received(request)``, ``task_started(request)``,
  ``task_finished(request, result)``, ``task_retried(request)``: run in the worker process, on the
  endpoint's event loop (keep them quick, never block); an exception there is logged and ignored.
- **middleware** ``around_sync(ctx, proceed)`` and ``async around_async(ctx, proceed)``: run
  *where the body runs*, around it: ``around_sync`` in the process-pool child (``--pool
  process``) or the pool thread (``--pool thread``) that runs a sync body, ``around_async`` on the
  task event loop that runs an async body. ``ctx`` is the attempt's `TaskContext`; ``proceed()``
  runs the next middleware and finally the body and returns its output, which the middleware
  returns (or replaces). An exception raised by a middleware fails the attempt like one raised by
  the body (the task's retry policy applies). The first hook listed is the outermost.

Because ``around_sync`` runs in pool children, the children import the hooks themselves, by
``MODULE:ATTR`` (``serve --hooks MODULE:ATTR``): a hook holds no state shared with the worker
process, and each child has its own instance (e.g. its own database engine).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from flink_tasks.context import TaskContext

__all__ = [
    "AsyncMiddleware",
    "SyncMiddleware",
    "TaskMiddleware",
    "call_async",
    "call_sync",
    "load_hooks",
    "module_attribute_of",
]


class SyncMiddleware(Protocol):
    """Wraps sync task bodies, where they run."""

    def around_sync(self, ctx: TaskContext, proceed: Callable[[], Any]) -> Any: ...


class AsyncMiddleware(Protocol):
    """Wraps async task bodies, on the task event loop."""

    async def around_async(self, ctx: TaskContext, proceed: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``await proceed()`` and return its output (or another one)."""


class TaskMiddleware:
    """A middleware base class: both methods pass through; override what you need."""

    def around_sync(self, ctx: TaskContext, proceed: Callable[[], Any]) -> Any:
        """Wrap a sync body: run ``proceed()`` and return its output (or another one)."""
        return proceed()

    async def around_async(self, ctx: TaskContext, proceed: Callable[[], Awaitable[Any]]) -> Any:
        """Wrap an async body: run ``await proceed()`` and return its output (or another)."""
        return await proceed()


def sync_middleware(hooks: Iterable[object]) -> list[SyncMiddleware]:
    """The hooks that wrap sync bodies."""
    return [h for h in hooks if callable(getattr(h, "around_sync", None))]  # type: ignore[misc]


def async_middleware(hooks: Iterable[object]) -> list[AsyncMiddleware]:
    """The hooks that wrap async bodies."""
    return [h for h in hooks if callable(getattr(h, "around_async", None))]  # type: ignore[misc]


def call_sync(
    middleware: Sequence[SyncMiddleware], ctx: TaskContext, body: Callable[[], Any]
) -> Any:
    """``body()`` inside the middleware, the first one outermost."""

    def at(index: int) -> Any:
        if index == len(middleware):
            return body()
        return middleware[index].around_sync(ctx, lambda: at(index + 1))

    return at(0)


async def call_async(
    middleware: Sequence[AsyncMiddleware],
    ctx: TaskContext,
    body: Callable[[], Awaitable[Any]],
) -> Any:
    """``await body()`` inside the middleware, the first one outermost."""

    async def at(index: int) -> Any:
        if index == len(middleware):
            return await body()
        return await middleware[index].around_async(ctx, lambda: at(index + 1))

    return await at(0)


def load_hooks(target: str) -> list[object]:
    """The hooks at ``MODULE:ATTR``: one object, or a list or tuple of them."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(
            f"expected MODULE:ATTR for hooks (e.g. myapp.hooks:db_session), got {target!r}"
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    value: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise AttributeError(f"module {module_name!r} does not define {attribute!r} (hooks)")
        value = getattr(value, part)
    if isinstance(value, type):
        raise TypeError(f"{target} is a class; hooks are objects: instantiate it at module level")
    return list(value) if isinstance(value, list | tuple) else [value]


def module_attribute_of(value: object) -> str | None:
    """``MODULE:ATTR`` of a module-level variable that holds `value`, or None."""
    for name, module in list(sys.modules.items()):
        if module is None or name == "__main__" or name.startswith("__mp_main__"):
            continue
        for attr, candidate in list(getattr(module, "__dict__", {}).items()):
            if candidate is value:
                return f"{name}:{attr}"
    return None
