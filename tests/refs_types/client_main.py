"""A client process that never imports the worker's task module: it builds pipelines with the
stubs and refs of `client_stubs`, submits them and prints one JSON object of what came back.
Settings come from ``FLINK_TASKS_*`` environment variables (`ClientSettings.from_env`)."""

from __future__ import annotations

import json
import sys
from typing import Any

from flink_tasks_client import ClientSettings, FlinkTasksClient, SerializationError, TaskError

from tests.refs_types import client_stubs as stubs
from tests.refs_types.shared_types import Order, Point, Unregistered


def _kind(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def main() -> int:
    out: dict[str, Any] = {}
    with FlinkTasksClient(settings=ClientSettings.from_env()) as client:
        # typed stubs and untyped refs in one pipeline: (6 * 7) + 8
        result: int = client.submit_sync(stubs.multiply.send(6, 7).continue_with(stubs.add, 8))
        out["arithmetic"] = result
        moved = client.submit_sync(stubs.move.send(Point(1, 2, "a"), 10, dy=1))
        out["moved"] = [_kind(moved), moved.x, moved.y, moved.label]
        order = Order(sku="a1", quantity=2, points=[Point(0, 1)])
        filled = client.submit_sync(stubs.fill.send(order, 3))
        out["filled"] = [_kind(filled), filled.model_dump(), _kind(filled.points[0])]
        state = client.submit_sync(
            stubs.remember.send("point", Point(5, 5))
            .continue_with(stubs.read_state)
            .with_initial(state={"order": order})
        )
        out["state"] = {key: [_kind(value), repr(value)] for key, value in sorted(state.items())}
        try:
            stubs.move.send(Unregistered(1), 1).to_proto()  # type: ignore[arg-type]
        except SerializationError as err:
            out["unregistered_argument"] = str(err)
        try:
            client.submit_sync(stubs.tasks.ref(f"{stubs.WORKER_MODULE}.make_unregistered").send(3))
        except TaskError as err:
            out["unregistered_result"] = [err.exception_type, err.exception_message]
        try:  # registered in the worker only: this client cannot rebuild it
            client.submit_sync(stubs.tasks.ref(f"{stubs.WORKER_MODULE}.celsius").send(20.0))
        except SerializationError as err:
            out["unknown_here"] = str(err)
    out["worker_module_imported"] = stubs.WORKER_MODULE in sys.modules
    print(json.dumps(out, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
