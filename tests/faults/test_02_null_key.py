"""A record without a key on the request topic, on a runtime of its own (it is destructive).

Stock StateFun 3.3.0's Kafka ingress routes a record to the function id given by its key; a
record with a null key makes the ingress throw, the job fails, restarts from its checkpoint,
reads the same record again, and so on: a crash loop that no Python code sees (the record never
reaches the worker). The restart strategy (exponential delay, no attempt limit, so that an
outage never fails the job for good) never gives up, so the loop goes on, ever slower, until
someone moves the consumer offset past the record. It cannot be fixed without custom
Java in the ingress, so flink-tasks' guarantee is on the producing side: the client always sets
the key (test_05_bad_input.py::test_client_always_sets_a_key). This test verifies the property,
so that the documentation (docs/reliability.md) stays true.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from kafka import KafkaProducer

from flink_tasks._proto import messages_pb2
from tests.faults import fault_tasks as ft
from tests.faults.harness import (
    FaultStack,
    fault_stack,
    job_health,
    record_result,
    restart_strategy,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def doomed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with fault_stack(
        tmp_path_factory.mktemp("faults-null-key"),
        61200,
        restart_initial_backoff=timedelta(milliseconds=500),
        restart_max_backoff=timedelta(seconds=2),
        restart_jitter_factor=0.0,
    ) as s:
        yield s


def test_record_without_key_crash_loops_stock_statefun(doomed: FaultStack) -> None:
    s = doomed.settings
    assert doomed.client.submit_sync(ft.square.send(2), timeout=60) == 4
    before = job_health(doomed.runtime)
    request = messages_pb2.PipelineRequest(
        pipeline=ft.square.send(3).to_proto(), reply_topic=s.replies_topic, reply_id="nk"
    )
    producer = KafkaProducer(bootstrap_servers=s.bootstrap_servers)
    try:
        producer.send(s.requests_topic, key=None, value=request.SerializeToString()).get(30)
    finally:
        producer.close()
    sent_at = time.monotonic()
    marker = "requires a UTF-8 key set for each record"
    failure_line = (
        "switched from RUNNING to FAILED with failure cause: java.lang.IllegalStateException: "
        f"The io.statefun.kafka.v1/ingress ingress {marker}"
    )
    log = s.statefun_log_file

    def failures() -> int:
        return log.read_text(errors="replace").count(failure_line)

    # the job fails, restarts from its checkpoint, reads the record again, fails again, ...:
    # more failures than the old fixed-delay strategy (first run + 2 attempts) ever allowed
    deadline = sent_at + 120
    while failures() < 4 and time.monotonic() < deadline:
        assert doomed.runtime.statefun.process.is_running(), "the StateFun JVM exited"
        time.sleep(0.5)
    seen = failures()
    looping_for = time.monotonic() - sent_at
    # Flink's REST API refreshes metrics every 10 s: wait for numRestarts to catch up
    health = job_health(doomed.runtime)
    while health.restarts < 3 and time.monotonic() < deadline:
        time.sleep(1.0)
        health = job_health(doomed.runtime)
    text = log.read_text(errors="replace")
    record_result(
        scenario="record without a key on the request topic (stock StateFun ingress)",
        ingress_failures=failures(),
        seconds_for_4_failures=round(looping_for, 1),
        job_state=health.state,
        job_restarts=health.restarts,
        jvm_alive=doomed.runtime.statefun.process.is_running(),
        root_exception=f"IllegalStateException: ... ingress {marker}",
    )
    assert seen >= 4, seen
    assert health.jid == before.jid  # the same job, restarting: never FAILED for good
    assert health.state in ("RESTARTING", "RUNNING", "CREATED", "INITIALIZING"), health.state
    assert health.restarts >= 3, health.restarts
    assert health.root_exception is not None and marker in health.root_exception
    assert "Recovery is suppressed" not in text
    # no attempt limit: the strategy in effect is exponential-delay (it has none in Flink 1.16)
    assert restart_strategy(doomed.runtime)["restart-strategy"] == "exponential-delay"
    assert doomed.runtime.statefun.process.is_running()
