"""What the cluster-mode tests look at: where the functions operator runs, the messages into
it per subtask (Flink's REST API), and the final replies on the reply topic."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from flink_tasks.runtime import LocalRuntime
from tests.cluster.cluster_tasks import expected_sum_of_squares, sum_of_squares
from tests.faults.harness import ReplyReader, rest_get

FUNCTIONS_OPERATOR = "functions"


def functions_vertex(runtime: LocalRuntime) -> tuple[str, str]:
    job = runtime.job_status()
    assert job is not None
    vertices = rest_get(runtime, f"/jobs/{job.jid}")["vertices"]
    [vertex] = [v for v in vertices if FUNCTIONS_OPERATOR in v["name"].split(" -> ")]
    return job.jid, vertex["id"]


def subtask_placement(runtime: LocalRuntime) -> dict[int, str]:
    """Subtask index of the functions operator -> the TaskManager running it."""
    jid, vid = functions_vertex(runtime)
    detail = rest_get(runtime, f"/jobs/{jid}/vertices/{vid}")
    return {s["subtask"]: s["taskmanager-id"] for s in detail["subtasks"]}


def records_in(runtime: LocalRuntime) -> dict[int, int]:
    """Messages into the functions operator so far, per subtask (ingress and feedback)."""
    jid, vid = functions_vertex(runtime)
    parallelism = rest_get(runtime, f"/jobs/{jid}/vertices/{vid}")["parallelism"]
    names = ",".join(f"{i}.{FUNCTIONS_OPERATOR}.numRecordsIn" for i in range(parallelism))
    metrics = rest_get(runtime, f"/jobs/{jid}/vertices/{vid}/metrics?get={names}")
    return {int(m["id"].split(".")[0]): int(float(m["value"])) for m in metrics}


def client_for(runtime: LocalRuntime) -> Any:
    from flink_tasks_client import FlinkTasksClient

    return FlinkTasksClient(
        bootstrap_servers=runtime.bootstrap_servers,
        read_committed=True,
        default_timeout=timedelta(minutes=5),
    )


async def final_replies(
    client: Any, reader: ReplyReader, pipeline_ids: list[str]
) -> dict[str, int]:
    """Final replies per pipeline once the reader has read everything committed so far: a
    marker pipeline submitted now replies after every earlier reply (one reply partition,
    read_committed), so once the reader sees it, any duplicate would have been seen too."""
    marker = sum_of_squares(2, offset=7)
    assert await client.submit_async(marker) == expected_sum_of_squares(2, offset=7)
    deadline = time.monotonic() + 60
    while reader.final_reply_counts([marker.id])[marker.id] < 1:
        assert time.monotonic() < deadline, "the reply reader did not see the marker's reply"
        await asyncio.sleep(0.1)
    return reader.final_reply_counts(pipeline_ids)
