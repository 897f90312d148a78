"""A record without a key on the request topic, on a runtime of its own (it is destructive).

Stock StateFun 3.3.0's Kafka ingress routes a record to the function id given by its key; a
record with a null key makes the ingress throw, the job fails, restarts from its checkpoint,
reads the same record again, and so on until the restart strategy gives up: a crash loop that
no Python code sees (the record never reaches the worker). It cannot be fixed without custom
Java in the ingress, so flink-tasks' guarantee is on the producing side: the client always sets
the key (test_05_bad_input.py::test_client_always_sets_a_key). This test verifies the property,
so that the documentation (docs/reliability.md) stays true.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kafka import KafkaProducer

from flink_tasks._proto import messages_pb2
from tests.faults import fault_tasks as ft
from tests.faults.harness import FaultStack, fault_stack, record_result

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.filterwarnings(
        "ignore:.*is deprecated. Use files\\(\\) instead:DeprecationWarning"
    ),
]


@pytest.fixture(scope="module")
def doomed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with fault_stack(tmp_path_factory.mktemp("faults-null-key"), 61200, restart_attempts=2) as s:
        yield s


def test_record_without_key_crash_loops_stock_statefun(doomed: FaultStack) -> None:
    s = doomed.settings
    assert doomed.client.submit_sync(ft.square.send(2), timeout=60) == 4
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
    log = s.statefun_log_file
    deadline = sent_at + 120
    # the job fails, restarts twice from its checkpoint, fails for good; the MiniCluster JVM
    # then exits (its launcher's execute() returns with the failure)
    while doomed.runtime.statefun.process.is_running() and time.monotonic() < deadline:
        time.sleep(0.5)
    text = log.read_text(errors="replace")
    failures = text.count(
        "switched from RUNNING to FAILED with failure cause: java.lang.IllegalStateException: "
        f"The io.statefun.kafka.v1/ingress ingress {marker}"
    )
    record_result(
        scenario="record without a key on the request topic (stock StateFun ingress)",
        ingress_failures=failures,
        jvm_alive_after=doomed.runtime.statefun.process.is_running(),
        seconds_to_give_up=round(time.monotonic() - sent_at, 1),
        root_exception=f"IllegalStateException: ... ingress {marker}",
    )
    assert failures == 3, failures  # the first run + restart_attempts=2
    assert "Recovery is suppressed by FixedDelayRestartBackoffTimeStrategy" in text
    assert not doomed.runtime.statefun.process.is_running()
