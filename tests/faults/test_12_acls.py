"""Issue 12: authorization where Kafka does it (``kafka_security="sasl_ssl"``, ``kafka_acls``).

KRaft's StandardAuthorizer is on and every role has only its ACLs (flink_tasks/runtime/
kafka_acls.py): the StateFun job runs pipelines as ``statefun``; a ``submitter`` may submit and
read replies but not write the actions topic, so its cancel is refused by Kafka and reported
clearly, while the ``operator`` cancels.
"""

from __future__ import annotations

import time
import uuid

import pytest

from flink_tasks.errors import PipelineCancelledError, TransportError
from flink_tasks.types import PipelineStatus
from tests.faults import fault_tasks as ft
from tests.faults.harness import FaultStack, record_result

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_operator_cancels_submitter_cannot(secured_stack: FaultStack) -> None:
    operator = secured_stack.new_client(role="operator")
    # without write access to the actions topic a submitter cannot look ids up: reuse="allow"
    submitter = secured_stack.new_client(role="submitter", pipeline_reuse="allow")
    try:
        assert submitter.submit_sync(ft.square.send(9), timeout=120) == 81
        pipeline = ft.slow.send(60.0, "never")
        pipeline.id = f"acl-{uuid.uuid4().hex[:8]}"
        running = submitter.submit(pipeline, timeout=120)
        deadline = time.monotonic() + 60
        while operator.get_status_sync(pipeline.id) != PipelineStatus.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(TransportError, match="submitter is not allowed to write to") as refused:
            submitter.cancel_sync(pipeline.id)
        refused_s = time.monotonic() - started
        assert "flink-tasks.actions" in str(refused.value)
        assert refused_s < 5, refused_s
        with pytest.raises(TransportError, match="not allowed to write"):
            submitter.submit_sync(ft.square.send(3), timeout=60, reuse="attach")
        assert operator.get_status_sync(pipeline.id) == PipelineStatus.RUNNING
        assert operator.cancel_sync(pipeline.id) == PipelineStatus.CANCELLED
        with pytest.raises(PipelineCancelledError):
            running.result(timeout=60)
        assert submitter.healthy  # a refused record is no reason to rebuild anything
    finally:
        operator.close()
        submitter.close()
    record_result(
        scenario="client: ACLs, submitter's cancel refused by Kafka, operator cancels",
        refused_after_s=round(refused_s, 2),
    )
