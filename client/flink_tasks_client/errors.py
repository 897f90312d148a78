"""Errors raised by the client, in addition to those of `flink_tasks.errors`."""

from __future__ import annotations

from flink_tasks.errors import ClientError


class RequestTooLargeError(ClientError, ValueError):
    """A request is larger than ``max_request_bytes``; it was refused before sending."""
