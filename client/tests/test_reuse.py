"""Reuse policies and `wait_result` at the transport level (against the pipeline function's
stand-in): which requests are sent for each policy. Their behaviour on the real runtime is
tested in tests/faults/test_12_client.py."""

from __future__ import annotations

from typing import Any

import pytest
from _stand_in import PipelineFunctionStandIn
from flink_tasks_client import ClientSettings, FlinkTasksClient, PipelineExistsError

from flink_tasks import FlinkTasks
from flink_tasks.errors import PipelineNotFoundError
from flink_tasks.types import PipelineStatus

pytestmark = pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")

tasks = FlinkTasks()


@tasks.bind(name="transport.echo")
def echo(*args: Any) -> Any:
    return args[0] if len(args) == 1 else args


def _echo(value: Any, pipeline_id: str) -> Any:
    pipeline = echo.send(value)
    pipeline.id = pipeline_id
    return pipeline


def test_attach_is_the_default_and_answers_a_finished_id_without_sending(
    settings: ClientSettings, stand_in: PipelineFunctionStandIn
) -> None:
    assert ClientSettings().pipeline_reuse == "attach"
    with FlinkTasksClient(settings=settings, pipeline_reuse="attach") as client:
        assert client.submit_sync(_echo("one", "p-attach"), timeout=20) == "one"
        assert client.submit_sync(_echo("two", "p-attach"), timeout=20) == "one"
        assert client.enqueue(_echo("two", "p-attach")).result(timeout=20) == "p-attach"
    assert [r.pipeline.id for _, r in stand_in.requests_seen] == ["p-attach"]


def test_a_generated_id_is_sent_without_a_lookup_once(
    settings: ClientSettings, stand_in: PipelineFunctionStandIn
) -> None:
    """A builder's own fresh id cannot be known: its first submit skips the status lookup under
    every policy; submitting the same builder again (a retry) looks it up and attaches."""
    with FlinkTasksClient(settings=settings, pipeline_reuse="attach") as client:
        pipeline = echo.send("fresh")
        assert client.submit_sync(pipeline, timeout=20) == "fresh"
        assert stand_in.actions_seen == []
        assert client.submit_sync(pipeline, timeout=20) == "fresh"  # attached, not run again
        looked_up = [a.pipeline_id for a in stand_in.actions_seen]
        assert looked_up and set(looked_up) == {pipeline.id}
        rejected = echo.send("fresh too")
        assert client.enqueue(rejected, reuse="reject").result(timeout=20) == rejected.id
        assert len(stand_in.actions_seen) == len(looked_up)
    assert [r.pipeline.id for _, r in stand_in.requests_seen] == [pipeline.id, rejected.id]


def test_reject_and_allow(settings: ClientSettings, stand_in: PipelineFunctionStandIn) -> None:
    with FlinkTasksClient(settings=settings, pipeline_reuse="reject") as client:
        assert client.submit_sync(_echo("one", "p-rej"), timeout=20) == "one"
        with pytest.raises(PipelineExistsError) as caught:
            client.submit_sync(_echo("two", "p-rej"), timeout=20)
        assert caught.value.status == PipelineStatus.COMPLETED
        assert client.submit_sync(_echo("two", "p-rej"), timeout=20, reuse="allow") == "two"
    assert len(stand_in.requests_seen) == 2


def test_wait_result(settings: ClientSettings, stand_in: PipelineFunctionStandIn) -> None:
    with FlinkTasksClient(settings=settings, pipeline_reuse="attach") as client:
        client.enqueue(_echo("stored", "p-wait")).result(timeout=20)
        stand_in.wait_for_requests(1)
        assert client.wait_result_sync("p-wait", timeout=20) == "stored"
        with pytest.raises(PipelineNotFoundError):
            client.wait_result_sync("p-unknown", timeout=20)


def test_unknown_policy_is_refused(settings: ClientSettings) -> None:
    with pytest.raises(ValueError, match="pipeline_reuse"):
        settings.replace(pipeline_reuse="sometimes")
    with FlinkTasksClient(settings=settings) as client, pytest.raises(ValueError, match="reuse"):
        client.submit(_echo("x", "p-x"), reuse="sometimes")  # type: ignore[arg-type]
