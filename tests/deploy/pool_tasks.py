"""Tasks of two worker pools: ``main_tasks`` (namespace flink_tasks, with the pipeline function)
and ``io_tasks`` (namespace io), each served by its own ``flink-tasks serve`` process. Every
result names the pool that computed it (``$POOL_NAME`` of the serving process)."""

from __future__ import annotations

import os
from typing import Any

from flink_tasks import FlinkTasks

main_tasks = FlinkTasks()
io_tasks = FlinkTasks()


def _pool() -> str:
    return os.environ.get("POOL_NAME", "unset")


@main_tasks.bind()
def double(x: int) -> dict[str, Any]:
    return {"value": 2 * x, "pool": _pool()}


@io_tasks.bind(namespace="io")
def store(item: dict[str, Any]) -> list[dict[str, Any]]:
    return [item, {"value": item["value"] + 1, "pool": _pool()}]
