"""A record without a key on an ingress topic, on a runtime of its own (it is destructive).

Stock StateFun 3.3.0's Kafka ingress routes a record to the function id given by its key; a
record with a null key makes the ingress throw, the job fails, restarts from its checkpoint,
reads the same record again, and so on: a crash loop that no Python code sees (the record never
reaches the worker). It cannot be fixed without custom Java in the ingress, so flink-tasks keeps
such a record out of the topic: the ingress topics are created compacted (`cleanup.policy`
`compact,delete`), and the broker refuses a record without a key on a compacted topic, with an
error to its producer; the client always sets the key besides
(test_05_bad_input.py::test_client_always_sets_a_key). The first test checks the refusal; the
second turns the policy off, as on a topic created without flink-tasks' settings, and verifies
the crash loop that then follows, so that the documentation (docs/reliability.md) stays true.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import InvalidRecordError

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


def _keyless_request(doomed: FaultStack) -> bytes:
    s = doomed.settings
    request = messages_pb2.PipelineRequest(
        pipeline=ft.square.send(3).to_proto(), reply_topic=s.replies_topic, reply_id="nk"
    )
    return request.SerializeToString()


def test_the_ingress_topics_refuse_a_record_without_key(doomed: FaultStack) -> None:
    s = doomed.settings
    assert doomed.client.submit_sync(ft.square.send(2), timeout=60) == 4
    before = job_health(doomed.runtime)
    producer = KafkaProducer(bootstrap_servers=s.bootstrap_servers, retries=0)
    try:
        for topic in s.ingress_topics:
            with pytest.raises(InvalidRecordError):
                producer.send(topic, key=None, value=_keyless_request(doomed)).get(30)
    finally:
        producer.close()
    # nothing reached the job: it runs on, and takes the next pipeline as usual
    assert doomed.client.submit_sync(ft.square.send(5), timeout=60) == 25
    after = job_health(doomed.runtime)
    assert (after.jid, after.state, after.restarts) == (before.jid, "RUNNING", before.restarts)


def test_record_without_key_crash_loops_stock_statefun(doomed: FaultStack) -> None:
    s = doomed.settings
    assert doomed.client.submit_sync(ft.square.send(2), timeout=60) == 4
    before = job_health(doomed.runtime)
    # a request topic created without flink-tasks' settings: deletion only, no key check
    admin = KafkaAdminClient(bootstrap_servers=s.bootstrap_servers)
    try:
        policy = {"cleanup.policy": "delete"}
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, s.requests_topic, policy)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=s.bootstrap_servers)
    try:
        producer.send(s.requests_topic, key=None, value=_keyless_request(doomed)).get(30)
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
