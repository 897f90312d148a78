"""Log set-up for the processes flink-tasks starts, and the task fields on every record.

A task's ids (`TASK_FIELDS`) are held in a context variable while its body runs (`task_fields`,
entered where the body runs: a pool child, a pool thread or the task loop), and
`TaskFieldsFilter`, installed on the handlers, copies them onto every record logged meanwhile,
whichever logger logged it. Records logged outside a task carry none of them.

Formats: ``text`` (one line; a task's ids appended in brackets) and ``json`` (one JSON object a
line, by python-json-logger: the standard fields plus every ``extra``). The CLI configures the
worker process (`configure`); the process-pool children configure themselves the same way from
the environment the CLI sets (`LOG_FORMAT_VAR`, `LOG_LEVEL_VAR`), since they are started by the
fork server, not forked from a configured process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar, Token
from typing import Literal, TextIO

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
#: Environment variables: the log format and level of worker processes and pool children.
LOG_FORMAT_VAR = "FLINK_TASKS_LOG_FORMAT"
LOG_LEVEL_VAR = "FLINK_TASKS_LOG_LEVEL"
TASK_FIELDS = ("pipeline_id", "root_pipeline_id", "task_id", "task_type", "attempt")

_task: ContextVar[dict[str, object] | None] = ContextVar("flink_tasks_task_fields", default=None)


@contextlib.contextmanager
def task_fields(
    *, pipeline_id: str, root_pipeline_id: str, task_id: str, task_type: str, attempt: int
) -> Iterator[None]:
    """Records logged in this context (this thread or task) carry the task's ids."""
    token = _task.set(
        {
            "pipeline_id": pipeline_id,
            "root_pipeline_id": root_pipeline_id or pipeline_id,
            "task_id": task_id,
            "task_type": task_type,
            "attempt": attempt,
        }
    )
    try:
        yield
    finally:
        _task.reset(token)


@contextlib.contextmanager
def pipeline_ids(pipeline_id: str) -> Iterator[None]:
    """Records logged while the pipeline function handles a message carry its address."""
    token = enter_pipeline(pipeline_id)
    try:
        yield
    finally:
        leave(token)


def enter_pipeline(pipeline_id: str) -> Token[dict[str, object] | None]:
    """`pipeline_ids` without a generator, for the pipeline function's per-message path; give
    the token to `leave` (in a ``finally``)."""
    return _task.set({"pipeline_id": pipeline_id})


def leave(token: Token[dict[str, object] | None]) -> None:
    """Undo `enter_pipeline`."""
    _task.reset(token)


class TaskFieldsFilter(logging.Filter):
    """Adds the running task's ids to a record (fields set by ``extra`` are kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _task.get()
        if fields:
            for key, value in fields.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        return True


class TextFormatter(logging.Formatter):
    """One line; a task's ids in brackets at the end."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        task_id = getattr(record, "task_id", None)
        pipeline_id = getattr(record, "pipeline_id", None)
        if task_id is None and pipeline_id is None:
            return line
        if task_id is None:
            ids = f"[pipeline {pipeline_id}]"
        else:
            ids = (
                f"[task {getattr(record, 'task_type', '?')} {task_id} "
                f"pipeline {pipeline_id or '?'} "
                f"root {getattr(record, 'root_pipeline_id', '?')}]"
            )
        head, sep, rest = line.partition("\n")  # keep a traceback after the ids
        return f"{head} {ids}{sep}{rest}"


def formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter of `log_format`."""
    if log_format == "json":
        # imported here: python-json-logger comes with the worker extra, the CLI works without
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            "{asctime}{levelname}{name}{process}{message}",
            style="{",
            rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    if log_format == "text":
        return TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    raise ValueError(f"unknown log format {log_format!r}; use one of {', '.join(LOG_FORMATS)}")


def configure(level: int, log_format: LogFormat = "text", stream: TextIO | None = None) -> None:
    """Log `level` and up to `stream` (stderr) in `log_format`, task ids included."""
    handler = _OwnHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(TaskFieldsFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _OwnHandler):  # others' handlers (pytest's) stay
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


class _OwnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure` installs (and replaces when called again)."""


def configure_from_env() -> None:
    """For a process started by flink-tasks (a pool child): the format and level its worker
    process was configured with, if any."""
    log_format = os.environ.get(LOG_FORMAT_VAR)
    if log_format not in LOG_FORMATS:
        return
    level = logging.getLevelName(os.environ.get(LOG_LEVEL_VAR, "INFO"))
    configure(level if isinstance(level, int) else logging.INFO, log_format)  # type: ignore[arg-type]


class KafkaCloseRaceFilter(logging.Filter):
    """Drops kafka-python's traceback for a read on a transport closed meanwhile.

    kafka-python 3.0.12 closes a transport from the closing thread while its I/O thread may be
    waking to read it; the read then finds no socket and logs "Error receiving network data" at
    ERROR with an `AttributeError`, although nothing was lost (the close was ours). Only that
    record is dropped: a transport with its socket still open logs as before.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        transport = record.args[0] if isinstance(record.args, tuple) and record.args else None
        closed = transport is not None and getattr(transport, "_sock", "") is None
        return not (closed and isinstance(exc, AttributeError))


_KAFKA_TRANSPORT_LOGGER = logging.getLogger("kafka.net.transport")
_kafka_close_race_filter = KafkaCloseRaceFilter()


def quiet_kafka_close_race() -> None:
    """Install `KafkaCloseRaceFilter` on kafka-python's transport logger (idempotent)."""
    if _kafka_close_race_filter not in _KAFKA_TRANSPORT_LOGGER.filters:
        _KAFKA_TRANSPORT_LOGGER.addFilter(_kafka_close_race_filter)
