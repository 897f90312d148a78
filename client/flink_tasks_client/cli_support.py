"""What the client's commands share: exit codes, connection options and settings, loading a
pipeline by ``MODULE:ATTR``, and printing results and errors."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flink_tasks.config import load_attribute, parse_duration
from flink_tasks.errors import (
    PipelineCancelledError,
    TaskError,
)
from flink_tasks.pipeline import PipelineBuilder
from flink_tasks_client.settings import ClientSettings

if TYPE_CHECKING:
    pass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: The local runtime's Kafka port (``flink-tasks local up``), when nothing else is configured.
LOCAL_KAFKA_PORT = 19092

log = logging.getLogger(__name__)


class UsageError(Exception):
    """A command-line problem the user can fix (reported with exit code 2)."""


# --- registration --------------------------------------------------------------------------------


def default_bootstrap_servers(environ: dict[str, str] | None = None) -> str:
    """``$FLINK_TASKS_BOOTSTRAP_SERVERS``, else the local runtime's broker on 127.0.0.1.

    The local runtime's port is ``$FLINK_TASKS_KAFKA_PORT`` when set (as for
    ``flink-tasks local up``), else 19092.
    """
    env = os.environ if environ is None else environ
    servers = env.get("FLINK_TASKS_BOOTSTRAP_SERVERS", "").strip()
    if servers:
        return servers
    port = env.get("FLINK_TASKS_KAFKA_PORT", "").strip() or str(LOCAL_KAFKA_PORT)
    return f"127.0.0.1:{port}"


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default $FLINK_TASKS_BOOTSTRAP_SERVERS, else the local "
        f"runtime's 127.0.0.1:{LOCAL_KAFKA_PORT})",
    )
    group.add_argument("--request-topic", metavar="TOPIC", help="default flink-tasks.requests")
    group.add_argument("--action-topic", metavar="TOPIC", help="default flink-tasks.actions")
    group.add_argument("--reply-topic", metavar="TOPIC", help="default flink-tasks.replies")
    group.add_argument("--events-topic", metavar="TOPIC", help="default flink-tasks.events")
    group.add_argument(
        "--timeout",
        type=_duration,
        metavar="DURATION",
        help="how long to wait for the reply, e.g. 30s or 5min (default 60s; watch: no limit)",
    )
    group.add_argument(
        "--connect-timeout",
        type=_duration,
        metavar="DURATION",
        help="how long to try to reach Kafka before giving up (default 15s)",
    )
    return common


def settings_from_args(args: argparse.Namespace) -> ClientSettings:
    """`ClientSettings.from_env`, with the command-line options on top."""
    overrides: dict[str, Any] = {}
    for option in ("request_topic", "action_topic", "reply_topic", "events_topic"):
        value = getattr(args, option, None)
        if value is not None:
            overrides[option] = value
    overrides["bootstrap_servers"] = (
        getattr(args, "bootstrap_servers", None) or default_bootstrap_servers()
    )
    if getattr(args, "timeout", None) is not None:
        overrides["default_timeout"] = args.timeout
    if getattr(args, "connect_timeout", None) is not None:
        overrides["connect_timeout"] = args.connect_timeout
    try:
        return ClientSettings.from_env(**overrides)
    except (TypeError, ValueError) as err:
        raise UsageError(str(err)) from None


# --- loading a pipeline --------------------------------------------------------------------------


def load_pipeline(spec: str) -> PipelineBuilder:
    """The pipeline ``MODULE:ATTR`` names (a builder, or a zero-argument factory of one).

    Raises:
        UsageError: the module or attribute cannot be found, or is not a pipeline.
    """
    try:
        target: Any = load_attribute(spec, form="MODULE:PIPELINE", example="examples.seed:fan_in")
    except ValueError as err:
        raise UsageError(str(err)) from err
    if not isinstance(target, PipelineBuilder):
        if not callable(target):
            raise UsageError(
                f"{spec} is a {type(target).__name__}, not a pipeline or a function returning one"
            )
        try:
            target = target()
        except TypeError as err:
            raise UsageError(f"{spec}() must take no arguments: {err}") from err
        if not isinstance(target, PipelineBuilder):
            raise UsageError(f"{spec}() returned a {type(target).__name__}, not a pipeline")
    return target


# --- output --------------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A result as JSON (tuples as lists); what JSON cannot hold as its ``repr``."""

    def fallback(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        if isinstance(obj, (set, frozenset)):
            return sorted(obj, key=repr)
        if isinstance(obj, bytes):
            return obj.decode("utf-8", "backslashreplace")
        return repr(obj)

    return json.dumps(value, ensure_ascii=False, default=fallback)


def _shorten(text: str, limit: int = 160) -> str:
    from rich.markup import escape

    return escape(text if len(text) <= limit else text[: limit - 1] + "…")


def _error(message: str) -> None:
    print(f"flink-tasks: {message}", file=sys.stderr)


def _report_task_error(pipeline_id: str, err: TaskError, verbose: bool) -> int:
    if isinstance(err, PipelineCancelledError):
        _error(f"pipeline {pipeline_id} was cancelled")
    else:
        _error(f"pipeline {pipeline_id} failed: {err.exception_type}: {err.exception_message}")
        if err.type:
            _error(f"  in task {err.type} ({err.task_id})")
    if verbose and err.stacktrace:
        print(err.stacktrace.rstrip(), file=sys.stderr)
    return EXIT_FAILED
