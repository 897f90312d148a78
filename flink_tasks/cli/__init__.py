"""The ``flink-tasks`` command line (also ``python -m flink_tasks``).

Subcommands are registered by small ``register_*`` functions listed in :data:`SUBCOMMANDS`;
to add one (``serve``, ``submit``, ...), write ``register_x(subparsers)`` that adds a parser and
sets ``handler=`` (a ``Callable[[argparse.Namespace], int]``) with ``set_defaults``, and append it
to :data:`SUBCOMMANDS`. Logging is configured here and nowhere else.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TypeAlias

from flink_tasks.cli.local import (
    Subparsers,
    endpoint_arg,
    register_local,
    settings_from_args,
    status_as_dict,
)
from flink_tasks.cli.module_yaml import register_module_yaml
from flink_tasks.cli.serve import ENDPOINTS_VAR, register_serve
from flink_tasks.cli.topics import register_topics
from flink_tasks.logs import LogFormat
from flink_tasks.logs import configure as configure_log_output
from flink_tasks.runtime.errors import RuntimeLauncherError

__all__ = [
    "ENDPOINTS_VAR",
    "build_parser",
    "endpoint_arg",
    "main",
    "register_local",
    "register_module_yaml",
    "register_serve",
    "register_topics",
    "settings_from_args",
    "status_as_dict",
]

Handler: TypeAlias = Callable[[argparse.Namespace], int]

log = logging.getLogger("flink_tasks.cli")


# --- wiring --------------------------------------------------------------------------------------


#: Subcommand registrations, in help order. Append ``register_<name>`` functions here.
SUBCOMMANDS: list[Callable[[Subparsers], None]] = [register_local]
SUBCOMMANDS += [register_serve, register_module_yaml, register_topics]

#: Entry point group through which other distributions add subcommands: each entry point is a
#: ``register(subparsers)`` function. The client distribution adds the commands below.
COMMANDS_GROUP = "flink_tasks.commands"
CLIENT_COMMANDS = (
    "submit",
    "status",
    "result",
    "pause",
    "unpause",
    "cancel",
    "watch",
    "list",
    "dashboard",
)
CLIENT_DISTRIBUTION = "flink-tasks-client"


def plugin_commands() -> list[Callable[[Subparsers], None]]:
    """The registrations other installed distributions declare. One that cannot be loaded is
    an error naming it, never a silently shorter command list."""
    found: list[Callable[[Subparsers], None]] = []
    for entry_point in importlib.metadata.entry_points(group=COMMANDS_GROUP):
        try:
            found.append(entry_point.load())
        except Exception as exc:
            raise RuntimeError(
                f"cannot load flink-tasks commands {entry_point.name!r} ({entry_point.value}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    return found


def _register_missing_client_commands(subparsers: Subparsers) -> None:
    """Commands of the client distribution when it is not installed: each says so."""

    def missing(args: argparse.Namespace) -> int:
        print(
            f"flink-tasks {args.command}: this command comes with the {CLIENT_DISTRIBUTION} "
            f"distribution, which is not installed (pip install {CLIENT_DISTRIBUTION})",
            file=sys.stderr,
        )
        return 2

    for name in CLIENT_COMMANDS:
        if name in subparsers.choices:
            continue
        parser = subparsers.add_parser(name, help=f"(needs {CLIENT_DISTRIBUTION})", add_help=False)
        parser.add_argument("arguments", nargs=argparse.REMAINDER)
        parser.set_defaults(handler=missing)


def version_text() -> str:
    """``flink-tasks 0.1.0`` (and the client's version when it is installed)."""
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for dist in ("flink-tasks", "flink-tasks-client"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            if dist == "flink-tasks":
                parts.append(f"{dist} (not installed: running from source)")
    return ", ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flink-tasks",
        description="Celery-like tasks and pipelines on Apache Flink Stateful Functions.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    parser.add_argument("--version", action="version", version=version_text())
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in [*SUBCOMMANDS, *plugin_commands()]:
        register(subparsers)
    _register_missing_client_commands(subparsers)
    return parser


def configure_logging(verbosity: int, log_format: LogFormat = "text") -> None:
    level = logging.DEBUG if verbosity >= 2 else logging.INFO
    configure_log_output(level, log_format, sys.stderr)
    # kafka-python logs every connection attempt at INFO
    logging.getLogger("kafka").setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    if verbosity == 0:
        logging.getLogger("flink_tasks.runtime.process").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, getattr(args, "log_format", "text"))
    handler: Handler = args.handler
    try:
        return handler(args)
    except RuntimeLauncherError as exc:
        print(f"flink-tasks: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
