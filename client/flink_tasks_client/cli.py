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
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

from flink_tasks import logs
from flink_tasks.config import load_attribute, parse_duration
from flink_tasks.errors import (
    ActionError,
    ClientError,
    FlinkTasksError,
    PipelineCancelledError,
    PipelineNotFoundError,
    TaskError,
)
from flink_tasks.pipeline import PipelineBuilder
from flink_tasks.types import PipelineStatus
from flink_tasks_client import submit_task
from flink_tasks_client.settings import ClientSettings

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from flink_tasks._proto import events_pb2
    from flink_tasks_client._client import FlinkTasksClient

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: The local runtime's Kafka port (``flink-tasks local up``), when nothing else is configured.
LOCAL_KAFKA_PORT = 19092

_TERMINAL = frozenset({PipelineStatus.COMPLETED, PipelineStatus.FAILED, PipelineStatus.CANCELLED})
# A watch without --timeout runs until the pipeline ends.
_FOREVER = timedelta(days=365)

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


# --- watch ---------------------------------------------------------------------------------------


class WatchView:
    """What `watch` shows, built from a root pipeline's events and status replies."""

    #: Finished groups still shown once more than this many bars exist.
    KEEP_FINISHED = 3

    def __init__(self, pipeline_id: str, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.table import Column

        self.pipeline_id = pipeline_id
        self.console = console
        self.status: PipelineStatus | None = None
        self.started = time.monotonic()
        self.ended: float | None = None
        self.events = 0
        self.structure: str | None = None
        self.children: set[str] = set()
        self.finished_children: set[str] = set()
        self.skipped = 0
        self.outcome: str | None = None
        self.progress = Progress(
            TextColumn("{task.description}", table_column=Column(no_wrap=True)),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=console,
            auto_refresh=False,
            expand=True,
        )
        self._groups: dict[tuple[str, str], Any] = {}
        self._finished_groups: list[Any] = []

    # updates

    def set_status(self, status: PipelineStatus, *, source: str) -> None:
        """Record the root pipeline's status; a terminal status is never replaced."""
        if self.status in _TERMINAL or status == self.status:
            return
        self.status = status
        if status in _TERMINAL:
            self.ended = time.monotonic()
        self.log(f"status [bold]{status.name}[/]" + (f" ({source})" if source else ""))

    def apply(self, event: events_pb2.PipelineEvent) -> None:
        """Take one event of the root pipeline or of one of its children into the view."""
        self.events += 1
        kind = event.WhichOneof("event")
        is_root = event.pipeline_id == self.pipeline_id
        if kind == "pipeline_created":
            if is_root:
                entries = len(event.pipeline_created.pipeline.entries)
                self.structure = f"{entries} entr{'y' if entries == 1 else 'ies'}"
            else:
                self.children.add(event.pipeline_id)
        elif kind == "status_changed":
            status = PipelineStatus(event.status_changed.status)
            if is_root:
                self.set_status(status, source="")
            elif status in _TERMINAL:
                self.finished_children.add(event.pipeline_id)
        elif kind == "tasks_skipped":
            count = len(event.tasks_skipped.task_ids)
            self.skipped += count
            self.log(f"skipped {count} task{'s' if count != 1 else ''}")
        elif kind == "group_progress":
            self._progress(event.pipeline_id, event.group_progress)

    def _progress(self, pipeline_id: str, progress: events_pb2.GroupProgress) -> None:
        key = (pipeline_id, progress.group_id)
        task = self._groups.get(key)
        if task is None:
            base, dot, stage = progress.group_id.partition(".")
            label = f"group {base[:8]}{dot}{stage}"
            if pipeline_id != self.pipeline_id and not dot:
                label += " (child)"
            task = self.progress.add_task(
                label,
                total=progress.total,
                completed=progress.completed,
            )
            self._groups[key] = task
        else:
            self.progress.update(task, completed=progress.completed, total=progress.total)
        if progress.completed >= progress.total and task not in self._finished_groups:
            self._finished_groups.append(task)
            # Keep the view small for deep fan-outs: hide the older finished groups.
            if len(self._groups) > self.KEEP_FINISHED * 2:
                for old in self._finished_groups[: -self.KEEP_FINISHED]:
                    self.progress.update(old, visible=False)

    def log(self, markup: str) -> None:
        """A line above the live view (or, without a terminal, one plain line)."""
        elapsed = time.monotonic() - self.started
        self.console.print(f"[dim]{elapsed:7.1f}s[/] {markup}", highlight=False)

    # rendering

    def render(self) -> RenderableType:
        """The live view: a summary table and one progress bar per fan-out group."""
        from rich.console import Group
        from rich.table import Table

        status = self.status.name if self.status is not None else "…"
        colour = {
            "COMPLETED": "green",
            "FAILED": "red",
            "CANCELLED": "red",
            "CANCELLING": "yellow",
            "PAUSED": "yellow",
            "PENDING": "dim",
        }.get(status, "cyan")
        elapsed = (self.ended or time.monotonic()) - self.started
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("pipeline", self.pipeline_id)
        table.add_row("status", f"[{colour}]{status}[/]")
        table.add_row("elapsed", f"{elapsed:.1f}s")
        if self.structure:
            table.add_row("structure", self.structure)
        if self.children:
            table.add_row(
                "children", f"{len(self.finished_children)}/{len(self.children)} finished"
            )
        if self.skipped:
            table.add_row("skipped", f"{self.skipped} tasks")
        table.add_row("events", str(self.events))
        if self.outcome is not None:
            table.add_row("result", self.outcome)
        parts: list[RenderableType] = [table]
        if self._groups:
            parts.append(self.progress.get_renderable())
        return Group(*parts)


async def watch(
    client: FlinkTasksClient,
    pipeline_id: str,
    args: argparse.Namespace,
    *,
    submit: PipelineBuilder | None = None,
    console: Console | None = None,
) -> int:
    """Show the live view of a pipeline until it ends (submitting it first if given)."""
    from rich.console import Console
    from rich.live import Live

    console = console or Console(highlight=False)
    view = WatchView(pipeline_id, console)
    verbose = bool(getattr(args, "verbose", 0))
    timeout: timedelta = getattr(args, "timeout", None) or _FOREVER
    poll_s = getattr(args, "poll", timedelta(seconds=2)).total_seconds()
    deadline = time.monotonic() + timeout.total_seconds()
    # Subscribe first (the stream starts at the end of the events topic), then submit or ask
    # for the status: nothing that happens afterwards is missed.
    stream = client.events(pipeline_id, timeout=timeout)
    result_future: asyncio.Future[Any] | None = None
    async with stream:
        if submit is not None:
            result_future = asyncio.ensure_future(client.submit_async(submit, timeout=timeout))
        else:
            status = await client.get_status(pipeline_id)
            view.set_status(status, source="asked")
            if status == PipelineStatus.PENDING:
                view.log(f"no pipeline {pipeline_id} is known yet: waiting for it to start")

        async def follow_events() -> None:
            async for event in stream:
                view.apply(event)
                if view.status in _TERMINAL:
                    return

        async def poll_status() -> None:
            while view.status not in _TERMINAL:
                await asyncio.sleep(poll_s)
                status = await client.get_status(pipeline_id)
                if status != PipelineStatus.PENDING or submit is None:
                    view.set_status(status, source="asked")

        with Live(get_renderable=view.render, console=console, refresh_per_second=8):
            watchers = [
                asyncio.ensure_future(follow_events()),
                asyncio.ensure_future(poll_status()),
            ]
            if view.status not in _TERMINAL:
                remaining = max(0.0, deadline - time.monotonic())
                done, _ = await asyncio.wait(
                    watchers, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    error = task.exception()
                    if error is not None and view.status not in _TERMINAL:
                        raise error
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            if view.status not in _TERMINAL:
                view.log("[yellow]timed out[/]: the pipeline is still running")
                return EXIT_USAGE
            code = await _finish(client, view, result_future, verbose)
    if not console.is_terminal:
        console.line()  # Live leaves the last line of its final render open
    return code


async def _finish(
    client: FlinkTasksClient,
    view: WatchView,
    result_future: asyncio.Future[Any] | None,
    verbose: bool,
) -> int:
    """Fetch the outcome of a pipeline that ended, show it and return the exit code."""
    try:
        if result_future is not None:
            result = await result_future
        else:
            result = await client.get_result(view.pipeline_id)
    except TaskError as err:
        if isinstance(err, PipelineCancelledError):
            view.outcome = "[red]cancelled[/]"
        else:
            view.outcome = f"[red]{_shorten(f'{err.exception_type}: {err.exception_message}')}[/]"
        if verbose and err.stacktrace:
            view.console.print(err.stacktrace.rstrip(), markup=False, highlight=False)
        return EXIT_FAILED
    except PipelineNotFoundError as err:
        view.outcome = f"[yellow]not available: {_shorten(str(err))}[/]"
        return EXIT_OK if view.status == PipelineStatus.COMPLETED else EXIT_FAILED
    view.outcome = _shorten(format_value(result))
    return EXIT_OK if view.status == PipelineStatus.COMPLETED else EXIT_FAILED


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
