"""``watch``: the live view of a pipeline, from its events and status replies."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flink_tasks.errors import (
    PipelineCancelledError,
    PipelineNotFoundError,
    TaskError,
)
from flink_tasks.pipeline import PipelineBuilder
from flink_tasks.records import GroupProgress, PipelineEvent
from flink_tasks.types import PipelineStatus
from flink_tasks_client.cli_support import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    _shorten,
    format_value,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from flink_tasks_client._client import FlinkTasksClient

_TERMINAL = frozenset({PipelineStatus.COMPLETED, PipelineStatus.FAILED, PipelineStatus.CANCELLED})
# A watch without --timeout runs until the pipeline ends.
_FOREVER = timedelta(days=365)


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

    def apply(self, event: PipelineEvent) -> None:
        """Take one event of the root pipeline or of one of its children into the view."""
        self.events += 1
        is_root = event.pipeline_id == self.pipeline_id
        if event.created is not None:
            if is_root:
                entries = len(event.created.entries)
                self.structure = f"{entries} entr{'y' if entries == 1 else 'ies'}"
            else:
                self.children.add(event.pipeline_id)
        elif event.status is not None:
            if is_root:
                self.set_status(event.status, source="")
            elif event.status in _TERMINAL:
                self.finished_children.add(event.pipeline_id)
        elif event.kind == "tasks_skipped":
            count = len(event.skipped_task_ids)
            self.skipped += count
            self.log(f"skipped {count} task{'s' if count != 1 else ''}")
        elif event.progress is not None:
            self._progress(event.pipeline_id, event.progress)

    def _progress(self, pipeline_id: str, progress: GroupProgress) -> None:
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
