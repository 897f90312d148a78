"""The client's commands of the ``flink-tasks`` command line.

``submit MODULE:PIPELINE``, ``status ID``, ``result ID``, ``pause ID``, ``unpause ID``,
``cancel ID`` and ``watch ID``. They are registered into ``flink-tasks`` by `register` (when this
distribution is installed) and also run as ``python -m flink_tasks_client``.

Exit codes: 0 success; 1 the pipeline failed or was cancelled, an action was refused, or no such
pipeline (or result) is known; 2 a usage or environment problem (bad arguments, a pipeline that
cannot be loaded, Kafka unreachable, no reply within ``--timeout``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, TypeAlias

from flink_tasks import logs
from flink_tasks.errors import (
    ActionError,
    ClientError,
    FlinkTasksError,
    PipelineNotFoundError,
    TaskError,
)
from flink_tasks.types import PipelineStatus
from flink_tasks_client import submit_task
from flink_tasks_client.cli_support import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    LOCAL_KAFKA_PORT,
    UsageError,
    _common_options,
    _duration,
    _error,
    _report_task_error,
    default_bootstrap_servers,
    format_value,
    load_pipeline,
    settings_from_args,
)
from flink_tasks_client.cli_watch import WatchView, watch
from flink_tasks_client.settings import ClientSettings

if TYPE_CHECKING:
    from flink_tasks_client._client import FlinkTasksClient

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "LOCAL_KAFKA_PORT",
    "UsageError",
    "WatchView",
    "build_parser",
    "default_bootstrap_servers",
    "format_value",
    "load_pipeline",
    "main",
    "register",
    "settings_from_args",
    "watch",
]

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

log = logging.getLogger(__name__)


# --- registration ---------------------------------------------------------------------------------


def register(subparsers: Subparsers) -> None:
    """Add ``submit``, ``status``, ``result``, ``pause``, ``unpause``, ``cancel`` and ``watch``."""
    common = _common_options()

    submit = subparsers.add_parser(
        "submit",
        parents=[common],
        help="submit a pipeline and print its result",
        description="Import MODULE and submit the pipeline ATTR names: a PipelineBuilder, or a "
        "callable taking no arguments that returns one (e.g. examples.seed:fan_in). Prints the "
        "result as JSON on stdout, or the error on stderr. The current directory is importable.",
    )
    submit.add_argument("pipeline", metavar="MODULE:PIPELINE", nargs="?")
    submit_task.add_arguments(submit)
    submit.add_argument("--id", dest="pipeline_id", help="the pipeline id (default: a new UUID)")
    submit.add_argument(
        "--reuse",
        choices=("attach", "reject", "allow"),
        help="what to do when --id names a known pipeline: attach (wait for it / its result), "
        "reject, or allow (run it again once finished); default $FLINK_TASKS_PIPELINE_REUSE, "
        "else attach",
    )
    mode = submit.add_mutually_exclusive_group()
    mode.add_argument(
        "--no-wait",
        action="store_true",
        help="print the pipeline id once Kafka has the request, and return",
    )
    mode.add_argument(
        "--watch", action="store_true", help="show the live view (see watch) while waiting"
    )
    submit.set_defaults(handler=cmd_submit)

    status = subparsers.add_parser(
        "status",
        parents=[common],
        help="print a pipeline's status",
        description="Print the status: PENDING (unknown id), RUNNING, PAUSED, COMPLETED, "
        "FAILED, CANCELLING or CANCELLED.",
    )
    status.add_argument("pipeline_id", metavar="ID")
    status.set_defaults(handler=cmd_status)

    result = subparsers.add_parser(
        "result",
        parents=[common],
        help="print the result of a finished pipeline",
        description="Print the result as JSON, or the pipeline's error on stderr (exit 1). An "
        "unknown or unfinished pipeline is an error too (exit 1).",
    )
    result.add_argument("pipeline_id", metavar="ID")
    result.set_defaults(handler=cmd_result)

    for name, text in (
        ("pause", "pause a pipeline: no new task starts until unpause"),
        ("unpause", "resume a paused pipeline"),
        ("cancel", "cancel a pipeline (its finally_do still runs)"),
    ):
        action = subparsers.add_parser(
            name,
            parents=[common],
            help=text,
            description=f"{text[0].upper()}{text[1:]}. Prints the new status; a refused action "
            "(e.g. the pipeline has finished) is exit code 1.",
        )
        action.add_argument("pipeline_id", metavar="ID")
        action.set_defaults(handler=cmd_action, action=name)

    watch = subparsers.add_parser(
        "watch",
        parents=[common],
        help="show a live view of a pipeline until it ends",
        description="Follow a pipeline's events: its status, child pipelines, skipped tasks and a "
        "progress bar per fan-out group. Ends when the pipeline ends and prints its final status "
        "and result. Exit code 0 if it completed, 1 if it failed or was cancelled. Without a "
        "terminal the view is printed as plain lines.",
    )
    watch.add_argument("pipeline_id", metavar="ID")
    watch.add_argument(
        "--poll",
        type=_duration,
        default=timedelta(seconds=2),
        metavar="DURATION",
        help="also ask for the status this often, in case events are late or off (default 2s)",
    )
    watch.set_defaults(handler=cmd_watch)

    listing = subparsers.add_parser(
        "list",
        parents=[common],
        help="list root pipelines by status, task type and time (from the events topic)",
        description="List root pipelines from the events topic (newest update first): id, "
        "status, created and updated time (UTC) and task types. Reads only the records since "
        "--since; Flink's state is not scanned. Pipelines submitted without events are not seen.",
    )
    listing.add_argument(
        "--status",
        action="append",
        choices=[s.name.lower() for s in PipelineStatus],
        help="only pipelines whose status is this (repeatable)",
    )
    listing.add_argument("--task-type", help="only pipelines that run this task type")
    listing.add_argument(
        "--since",
        type=_duration,
        metavar="DURATION",
        help="only pipelines with an event in the last DURATION, e.g. 1h (default: all retained)",
    )
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    listing.set_defaults(handler=cmd_list)


# --- running a command ---------------------------------------------------------------------------


def _run(
    args: argparse.Namespace,
    body: Callable[[FlinkTasksClient, ClientSettings], Awaitable[int]],
) -> int:
    """Run ``body`` with a connected client, mapping errors to exit codes."""
    verbose = getattr(args, "verbose", 0) or 0
    if not verbose:
        # The command reports what goes wrong itself; the client's own log lines would repeat it.
        logging.getLogger("flink_tasks_client").setLevel(logging.CRITICAL)
        logging.getLogger("kafka").setLevel(logging.CRITICAL)

    async def main() -> int:
        from flink_tasks_client._client import FlinkTasksClient

        settings = settings_from_args(args)
        async with FlinkTasksClient(settings=settings) as client:
            return await body(client, settings)

    try:
        return asyncio.run(main())
    except UsageError as err:
        _error(str(err))
        return EXIT_USAGE
    except PipelineNotFoundError as err:
        _error(str(err))
        return EXIT_FAILED
    except ActionError as err:
        _error(f"refused: {err}")
        return EXIT_FAILED
    except ClientError as err:  # TransportError, ResultTimeoutError
        _error(str(err))
        return EXIT_USAGE
    except FlinkTasksError as err:
        _error(f"{type(err).__name__}: {err}")
        return EXIT_USAGE


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        if submit_task.wants_task(args):
            pipeline = submit_task.task_pipeline(args)
        else:
            submit_task.check_pipeline_options(args)
            pipeline = load_pipeline(args.pipeline)
    except (UsageError, submit_task.TaskArgumentsError) as err:
        _error(str(err))
        return EXIT_USAGE
    if args.pipeline_id:
        pipeline.id = args.pipeline_id
    verbose = bool(getattr(args, "verbose", 0))

    async def body(client: FlinkTasksClient, settings: ClientSettings) -> int:
        if args.no_wait:
            print(await client.enqueue_async(pipeline, reuse=args.reuse))
            return EXIT_OK
        print(f"submitted pipeline {pipeline.id}", file=sys.stderr)
        if args.watch:
            return await watch(client, pipeline.id, args, submit=pipeline)
        try:
            result = await client.submit_async(pipeline, reuse=args.reuse)
        except TaskError as err:
            return _report_task_error(pipeline.id, err, verbose)
        print(format_value(result))
        return EXIT_OK

    return _run(args, body)


def cmd_status(args: argparse.Namespace) -> int:
    async def body(client: FlinkTasksClient, settings: ClientSettings) -> int:
        print((await client.get_status(args.pipeline_id)).name)
        return EXIT_OK

    return _run(args, body)


def cmd_result(args: argparse.Namespace) -> int:
    verbose = bool(getattr(args, "verbose", 0))

    async def body(client: FlinkTasksClient, settings: ClientSettings) -> int:
        try:
            result = await client.get_result(args.pipeline_id)
        except TaskError as err:
            return _report_task_error(args.pipeline_id, err, verbose)
        print(format_value(result))
        return EXIT_OK

    return _run(args, body)


def cmd_action(args: argparse.Namespace) -> int:
    async def body(client: FlinkTasksClient, settings: ClientSettings) -> int:
        call = {"pause": client.pause, "unpause": client.unpause, "cancel": client.cancel}
        print((await call[args.action](args.pipeline_id)).name)
        return EXIT_OK

    return _run(args, body)


def cmd_list(args: argparse.Namespace) -> int:
    from flink_tasks_client._listing import list_pipelines

    if args.limit < 1:
        _error("--limit must be >= 1")
        return EXIT_USAGE

    async def body(client: FlinkTasksClient, settings: ClientSettings) -> int:
        statuses = [PipelineStatus[s.upper()] for s in args.status or []]
        rows = await asyncio.to_thread(
            list_pipelines,
            settings,
            status=statuses or None,
            task_type=args.task_type,
            since=args.since,
            limit=args.limit,
        )
        for row in rows:
            created = row.created.isoformat(timespec="seconds") if row.created else "-"
            fields = {
                "pipeline_id": row.pipeline_id,
                "status": row.status.name.lower(),
                "created": created,
                "updated": row.updated.isoformat(timespec="seconds"),
                "task_types": sorted(row.task_types),
            }
            if args.json:
                print(json.dumps(fields))
            else:
                print(
                    f"{row.pipeline_id}  {fields['status']:<10} {created:<25} "
                    f"{fields['updated']:<25} {','.join(fields['task_types'])}"
                )
        return EXIT_OK

    return _run(args, body)


def cmd_watch(args: argparse.Namespace) -> int:
    async def body(client: FlinkTasksClient, settings: ClientSettings) -> int:
        return await watch(client, args.pipeline_id, args)

    return _run(args, body)


# --- standalone entry point ----------------------------------------------------------------------


def _version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"flink-tasks-client {version('flink-tasks-client')}"
    except PackageNotFoundError:
        return "flink-tasks-client (not installed: running from source)"


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m flink_tasks_client``: the same commands as ``flink-tasks``."""
    parser = argparse.ArgumentParser(
        prog="python -m flink_tasks_client",
        description="Submit flink-tasks pipelines and act on them over Kafka.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more output (remote tracebacks, logs)"
    )
    parser.add_argument("--version", action="version", version=_version_text())
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    args = build_parser().parse_args(argv)
    logs.configure(logging.DEBUG if args.verbose >= 2 else logging.WARNING)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
