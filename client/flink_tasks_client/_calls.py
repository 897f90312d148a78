"""A call waiting for its reply, and completing its future safely from any thread."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from flink_tasks._proto import messages_pb2

T = TypeVar("T")

# The reply consumer's poll never blocks longer than this, so close() and timeouts are prompt.
POLL_INTERVAL_S = 0.1
#: How long after send_timeout an unacknowledged send is failed by the client itself.
ACK_GRACE_S = 1.0


@dataclass
class Call:
    """One request waiting for its reply."""

    future: Future[Any]
    interpret: Callable[[messages_pb2.Reply], Any]
    what: str
    timeout: timedelta


def succeed(future: Future[T], result: T) -> None:
    with contextlib.suppress(InvalidStateError):
        future.set_result(result)


def fail(future: Future[Any], error: BaseException) -> None:
    with contextlib.suppress(InvalidStateError):
        future.set_exception(error)
