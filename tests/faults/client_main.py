"""A client in its own process, for tests that kill it: ``submit ID SECONDS VALUE`` submits
``slow(SECONDS, VALUE)`` under id ID, prints ``SENT`` once Kafka acknowledged it and waits for
the result; ``wait ID`` prints the JSON result of `wait_result(ID)`; ``run ID SECONDS VALUE``
submits ``slow(SECONDS, VALUE)`` with ``reuse="allow"`` and prints the JSON result: after its
request it sends nothing more, only reads. Settings come from
``FLINK_TASKS_*`` environment variables (`ClientSettings.from_env`)."""

from __future__ import annotations

import json
import sys

from flink_tasks_client import ClientSettings, FlinkTasksClient

from tests.faults import fault_tasks as ft


def main(argv: list[str]) -> int:
    with FlinkTasksClient(settings=ClientSettings.from_env()) as client:
        if argv[0] == "submit":
            pipeline_id, seconds, value = argv[1], float(argv[2]), argv[3]
            pipeline = ft.slow.send(seconds, value)
            pipeline.id = pipeline_id
            client.enqueue(pipeline).result(timeout=60)
            print("SENT", flush=True)
            print(json.dumps(client.wait_result_sync(pipeline_id, timeout=120)), flush=True)
        elif argv[0] == "run":
            pipeline = ft.slow.send(float(argv[2]), argv[3])
            pipeline.id = argv[1]
            print(json.dumps(client.submit_sync(pipeline, timeout=120, reuse="allow")), flush=True)
        elif argv[0] == "wait":
            print(json.dumps(client.wait_result_sync(argv[1], timeout=120)), flush=True)
        else:
            raise SystemExit(f"unknown command {argv[0]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
