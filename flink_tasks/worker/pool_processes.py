"""The process pool's side of its child processes: which registry they import, how they are
started (start method), how their memory is measured, and what the pool knows about each."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from flink_tasks.registry import FlinkTasks

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def registry_target(tasks: FlinkTasks) -> str:
    """``MODULE:ATTR`` of a module-level variable that holds `tasks`, for children to import.

    Raises `ValueError` when there is none (a registry built in a function or in ``__main__``):
    give the process pool ``registry="MODULE:ATTR"``, or use the thread pool.
    """
    for name, module in list(sys.modules.items()):
        if module is None or name == "__main__" or name.startswith("__mp_main__"):
            continue
        for attr, value in list(getattr(module, "__dict__", {}).items()):
            if value is tasks:
                return f"{name}:{attr}"
    raise ValueError(
        "the process pool imports the task registry in each child by MODULE:ATTR, and this "
        "registry is not a module-level variable of an importable module; define it at module "
        "level (not in __main__), pass registry='MODULE:ATTR', or use the thread pool"
    )


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (Linux), or None if unknown."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def _context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        # Only our own modules: a user module that starts threads on import must not be forked.
        ctx.set_forkserver_preload(["flink_tasks.worker.pool_child", "flink_tasks.worker.execute"])
    return ctx


@dataclass(eq=False)
class _Child:
    process: Any  # multiprocessing.Process of the chosen context
    conn: multiprocessing.connection.Connection
    pid: int
    ready: bool = False
    waiter: asyncio.Future[bytes] | None = None
    task_type: str = ""
    max_memory: int | None = None
    kill_reason: str = ""
    killed_rss: int = 0
    timeout: float = 0.0
    timer: asyncio.TimerHandle | None = None
    dead: bool = False
    readers: list[int] = field(default_factory=list)
