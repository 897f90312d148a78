"""Errors raised by the client: all of them live in `flink_tasks.errors`; kept for imports."""

from __future__ import annotations

from flink_tasks.errors import ClientError, RequestTooLargeError

__all__ = ["ClientError", "RequestTooLargeError"]
