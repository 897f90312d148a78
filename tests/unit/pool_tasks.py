"""Tasks of the process-pool unit tests (imported by the pool's children by MODULE:ATTR)."""

from __future__ import annotations

import asyncio
import ctypes
import os
import time
from datetime import timedelta

from flink_tasks import FlinkTasks

tasks = FlinkTasks(default_timeout=timedelta(seconds=30))


@tasks.bind()
def add(x: int, y: int) -> int:
    return x + y


@tasks.bind()
def pid() -> int:
    return os.getpid()


@tasks.bind()
def exit_hard(code: int) -> None:
    os._exit(code)


@tasks.bind()
def segfault() -> None:
    ctypes.string_at(0)


@tasks.bind()
def hang(seconds: float) -> str:
    time.sleep(seconds)
    return "woke up"


@tasks.bind()
def fail() -> None:
    raise ValueError("bad value")


@tasks.bind(max_memory="150MiB")
def hog(mib: int) -> int:
    block = bytearray(mib * 2**20)
    for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
        block[i] = 1
    time.sleep(5)
    return len(block)


@tasks.bind()
async def block_loop(seconds: float) -> str:
    time.sleep(seconds)  # blocks the event loop it runs on, on purpose
    return "unblocked"


@tasks.bind()
async def async_add(x: int, y: int) -> int:
    await asyncio.sleep(0)
    return x + y


@tasks.bind()
def allocate(mib: int) -> int:
    """Allocates `mib` MiB (touched) and holds it briefly; no limit of its own."""
    block = bytearray(mib * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(2 if mib > 50 else 0)
    return len(block)
