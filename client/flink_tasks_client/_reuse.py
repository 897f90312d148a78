"""Submitting under a pipeline-id reuse policy, and waiting for a pipeline's result by id.

The engine keeps one run per pipeline id: it refuses a submit while a run of that id is going
and starts a new run when the last one has finished. A client that retries a submit (after a
timeout, a `TransportError` of unknown outcome, or a crash) must not start the pipeline twice by
accident, so before sending, the client asks the pipeline's status and acts on the policy:

- ``attach`` (the default): an unknown id is submitted; a running or paused one is waited for;
  a finished one answers with its stored result (or raises its error). A submit refused as
  "already running" (another process submitted it meanwhile) is waited for too.
- ``reject``: an unknown id is submitted; a known one raises `PipelineExistsError`.
- ``allow``: sent as is, without the lookup: a finished id runs again (a running one is still
  refused by the engine). The fastest: use it for ids generated fresh for each submit.

The lookup is an ordinary ``get_status`` action; a pipeline's own reply is recognised by its id
(every client reads the whole reply topic), so `wait_result` works from any process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

from flink_tasks._proto import messages_pb2
from flink_tasks.errors import (
    ACTION_ERROR,
    ALREADY_RUNNING_ERROR,
    NOT_FOUND_ERROR,
    ClientError,
    PipelineNotFoundError,
    TaskError,
)
from flink_tasks.types import PipelineStatus

if TYPE_CHECKING:
    from flink_tasks_client._client import FlinkTasksClient

Reuse = Literal["reject", "attach", "allow"]
REUSE_POLICIES: tuple[Reuse, ...] = ("reject", "attach", "allow")

#: Errors that answer an action, not a pipeline: never a pipeline's final reply.
_ACTION_ERRORS = frozenset({ACTION_ERROR, NOT_FOUND_ERROR, ALREADY_RUNNING_ERROR})
_GOING = frozenset({PipelineStatus.RUNNING, PipelineStatus.PAUSED})


class PipelineExistsError(ClientError):
    """A submit with ``reuse="reject"`` named a pipeline id that is running or has run."""

    def __init__(self, pipeline_id: str, status: PipelineStatus) -> None:
        super().__init__(
            f"pipeline {pipeline_id!r} already exists ({status.name}); wait for it with "
            "wait_result(...), or submit with reuse='attach' (its result) or reuse='allow' (run "
            "it again once finished)"
        )
        self.pipeline_id = pipeline_id
        self.status = status


def check_policy(reuse: object) -> Reuse:
    if reuse not in REUSE_POLICIES:
        raise ValueError(f"reuse must be one of {', '.join(REUSE_POLICIES)}, got {reuse!r}")
    return cast(Reuse, reuse)


def is_final_reply(reply: messages_pb2.Reply) -> bool:
    """Whether ``reply`` can be a pipeline's own (final) reply, not an answer to an action."""
    kind = reply.WhichOneof("outcome")
    if kind == "error":
        return reply.error.exception_type not in _ACTION_ERRORS
    return kind == "result" or kind is None


def submit(
    client: FlinkTasksClient,
    pipeline_id: str,
    limit: timedelta,
    policy: Reuse,
    send: Callable[[timedelta], Future[Any]],
    *,
    exists: Callable[[PipelineStatus], Future[Any]] | None = None,
) -> Future[Any]:
    """Look the id up, then ``send`` (unknown id) or act on ``policy`` (known id).

    ``exists`` replaces the attach behaviour for a known id (`enqueue` answers with the id).
    """
    deadline = time.monotonic() + limit.total_seconds()
    outcome: Future[Any] = Future()
    attach = policy == "attach" and exists is None
    waiter = client._wait_for_final_reply(pipeline_id, limit) if attach else None
    if waiter is not None:
        outcome.add_done_callback(lambda _: waiter.cancel())

    def on_status(status: PipelineStatus) -> None:
        if status == PipelineStatus.PENDING:
            send(_remaining(deadline)).add_done_callback(on_sent)
        elif policy == "reject":
            _fail(outcome, PipelineExistsError(pipeline_id, status))
        elif exists is not None:
            _chain(exists(status), outcome)
        else:
            _attach(client, pipeline_id, status, waiter, deadline, outcome)

    def on_sent(sent: Future[Any]) -> None:
        error = None if sent.cancelled() else sent.exception()
        if (
            waiter is not None
            and isinstance(error, TaskError)
            and error.exception_type == ALREADY_RUNNING_ERROR
        ):
            _chain(waiter, outcome)  # another process submitted it in the meantime
        else:
            _chain(sent, outcome)

    _then(client.action(pipeline_id, messages_pb2.ACTION_GET_STATUS, limit), outcome, on_status)
    return outcome


def wait_result(client: FlinkTasksClient, pipeline_id: str, limit: timedelta) -> Future[Any]:
    """The result of a pipeline submitted by any client: waits while it runs."""
    deadline = time.monotonic() + limit.total_seconds()
    outcome: Future[Any] = Future()
    waiter = client._wait_for_final_reply(pipeline_id, limit)
    outcome.add_done_callback(lambda _: waiter.cancel())

    def on_status(status: PipelineStatus) -> None:
        if status == PipelineStatus.PENDING:
            _fail(
                outcome,
                PipelineNotFoundError(
                    f"pipeline {pipeline_id!r} is unknown: it was not submitted, its request "
                    "is not processed yet, or its retention has passed"
                ),
            )
        else:
            _attach(client, pipeline_id, status, waiter, deadline, outcome)

    _then(client.action(pipeline_id, messages_pb2.ACTION_GET_STATUS, limit), outcome, on_status)
    return outcome


def _attach(
    client: FlinkTasksClient,
    pipeline_id: str,
    status: PipelineStatus,
    waiter: Future[Any] | None,
    deadline: float,
    outcome: Future[Any],
) -> None:
    if status in _GOING and waiter is not None:
        _chain(waiter, outcome)
    else:
        result = client.action(pipeline_id, messages_pb2.ACTION_GET_RESULT, _remaining(deadline))
        _chain(result, outcome)


def _remaining(deadline: float) -> timedelta:
    return timedelta(seconds=max(0.001, deadline - time.monotonic()))


def _then(source: Future[Any], target: Future[Any], step: Callable[[Any], None]) -> None:
    def done(f: Future[Any]) -> None:
        if target.done():
            return
        error = None if f.cancelled() else f.exception()
        if f.cancelled() or error is not None:
            _fail(target, error or ClientError("cancelled"))
            return
        try:
            step(f.result())
        except BaseException as err:  # a bug or bad input in a step: fail the call, clearly
            _fail(target, err)

    source.add_done_callback(done)
    target.add_done_callback(lambda _: source.cancel() if target.cancelled() else None)


def _chain(source: Future[Any], target: Future[Any]) -> None:
    _then(source, target, lambda result: _succeed(target, result))


def _succeed(future: Future[Any], result: Any) -> None:
    if not future.done():
        try:
            future.set_result(result)
        except Exception:  # completed concurrently
            return


def _fail(future: Future[Any], error: BaseException) -> None:
    if not future.done():
        try:
            future.set_exception(error)
        except Exception:  # completed concurrently
            return
