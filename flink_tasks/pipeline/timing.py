"""Start timing options of a task entry: `.set(countdown=, eta=, expires=)`, checked and encoded."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flink_tasks._proto import pipeline_pb2
from flink_tasks.errors import PipelineDefinitionError

TIMING_OPTIONS = ("countdown", "eta", "expires")


def check_timing(options: dict[str, Any]) -> None:
    """Raise `PipelineDefinitionError` for a timing option of the wrong type or sign."""
    countdown = options.get("countdown")
    if countdown is not None and (not isinstance(countdown, timedelta) or countdown < timedelta(0)):
        raise PipelineDefinitionError(
            f"countdown must be a non-negative timedelta, got {countdown!r}"
        )
    eta = options.get("eta")
    if eta is not None and not isinstance(eta, datetime):
        raise PipelineDefinitionError(f"eta must be a datetime, got {eta!r}")
    expires = options.get("expires")
    if expires is not None and not (
        isinstance(expires, datetime) or (isinstance(expires, timedelta) and expires > timedelta(0))
    ):
        raise PipelineDefinitionError(
            f"expires must be a positive timedelta or a datetime, got {expires!r}"
        )


def timing_to_proto(
    task: pipeline_pb2.TaskEntry,
    countdown: timedelta | None,
    eta: datetime | None,
    expires: timedelta | datetime | None,
) -> None:
    """Encode the timing options into `task` (a naive datetime is local time, as in Python)."""
    if countdown:
        task.countdown_ms = max(1, _ms(countdown))
    if eta is not None:
        task.eta_ms = max(1, int(eta.timestamp() * 1000))
    if isinstance(expires, timedelta):
        task.expires_in_ms = max(1, _ms(expires))
    elif isinstance(expires, datetime):
        task.expires_at_ms = max(1, int(expires.timestamp() * 1000))


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)
