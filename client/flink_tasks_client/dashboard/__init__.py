"""`flink-tasks dashboard`: a live web page of the pipelines on the events topic.

Registered as a ``flink_tasks.commands`` entry point of the client distribution; needs aiohttp
(``pip install 'flink-tasks-client[dashboard]'``). See docs/observability.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import timedelta

from flink_tasks_client.cli import Subparsers
from flink_tasks_client.cli_support import (
    UsageError,
    _common_options,
    _duration,
    settings_from_args,
)

__all__ = ["DEFAULT_PORT", "cmd_dashboard", "main", "register"]

DEFAULT_PORT = 18080
logger = logging.getLogger(__name__)


def register(subparsers: Subparsers) -> None:
    """Add ``dashboard``."""
    dashboard = subparsers.add_parser(
        "dashboard",
        parents=[_common_options()],
        help="serve a live web page of running and recent pipelines",
        description="Serve a web page that lists root pipelines as they run (from the events "
        "topic), shows one pipeline's tree with live progress bars and the traceback of the "
        "task that failed it, and pauses, unpauses or cancels it. Binds 127.0.0.1 by default.",
    )
    add_options(dashboard)
    dashboard.set_defaults(handler=cmd_dashboard)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; anyone who reaches the page can cancel "
        "pipelines: put an authenticating proxy in front before binding another address)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument(
        "--since",
        type=_duration,
        default=timedelta(hours=1),
        metavar="DURATION",
        help="read the events of this long ago on start, e.g. 1h or 1d (default 1h)",
    )
    parser.add_argument(
        "--limit", type=int, default=200, help="pipelines listed at most (default 200)"
    )


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve the dashboard until interrupted."""
    try:
        from aiohttp import web

        from flink_tasks_client.dashboard.app import create_app
    except ModuleNotFoundError as exc:
        print(
            f"flink-tasks dashboard: error: the dashboard needs aiohttp ({exc.name} is not "
            "installed): pip install 'flink-tasks-client[dashboard]'",
            file=sys.stderr,
        )
        return 1
    try:
        settings = settings_from_args(args)
    except UsageError as err:
        print(f"flink-tasks dashboard: error: {err}", file=sys.stderr)
        return 2
    if args.limit < 1:
        print("flink-tasks dashboard: error: --limit must be >= 1", file=sys.stderr)
        return 2
    app = create_app(settings, since=args.since, limit=args.limit)
    print(f"flink-tasks dashboard on http://{args.host}:{args.port}/", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, shutdown_timeout=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m flink_tasks_client.dashboard [options]``: the command without the entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m flink_tasks_client.dashboard", parents=[_common_options()]
    )
    add_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    return cmd_dashboard(args)
