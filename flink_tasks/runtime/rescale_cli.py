"""``flink-tasks local savepoint`` and ``flink-tasks local rescale``: registered by the ``local``
command (flink_tasks.cli), which passes in its run-dir option and settings reader."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from flink_tasks.runtime.local import LocalRuntime
from flink_tasks.runtime.rescale import rescale, take_savepoint
from flink_tasks.runtime.settings import LocalRuntimeSettings

SettingsFromArgs = Callable[[argparse.Namespace], LocalRuntimeSettings]


def register_rescale_commands(
    actions: Any,
    add_run_dir: Callable[[argparse.ArgumentParser], None],
    settings_from_args: SettingsFromArgs,
) -> None:
    """Add ``savepoint`` and ``rescale`` to the ``local`` command's actions."""
    savepoint = actions.add_parser(
        "savepoint", help="take a savepoint of the running StateFun job (--stop: and stop it)"
    )
    add_run_dir(savepoint)
    savepoint.add_argument(
        "--stop", action="store_true", help="cancel the job once the savepoint is written"
    )
    savepoint.set_defaults(handler=lambda args: _savepoint(args, settings_from_args))

    again = actions.add_parser(
        "rescale",
        help="take a savepoint, stop the job and start it from it at a new parallelism",
        description="A savepoint, the job cancelled, then started again from that savepoint with "
        "--parallelism (and in cluster mode --taskmanagers). Kafka and the workers keep "
        "running; pipelines in flight carry on. The same parallelism restarts the job on the "
        "installed flink-tasks and the current settings (an upgrade). Workers are upgraded "
        "on their own: stop `flink-tasks serve` and start the new version on the same port.",
    )
    add_run_dir(again)
    again.add_argument("--parallelism", type=int, required=True, help="the new parallelism")
    again.add_argument(
        "--taskmanagers", type=int, metavar="N", help="cluster mode: the new number of TaskManagers"
    )
    again.set_defaults(handler=lambda args: _rescale(args, settings_from_args))


def _savepoint(args: argparse.Namespace, settings_from_args: SettingsFromArgs) -> int:
    runtime = LocalRuntime.attach(settings_from_args(args))
    path = take_savepoint(runtime, stop=args.stop)
    print(f"savepoint: {path}")
    if args.stop:
        print("the job is stopped; start it from the savepoint with: flink-tasks local rescale")
    return 0


def _rescale(args: argparse.Namespace, settings_from_args: SettingsFromArgs) -> int:
    runtime = LocalRuntime.attach(settings_from_args(args))
    before = runtime.settings.parallelism
    path, seconds = rescale(runtime, args.parallelism, taskmanagers=args.taskmanagers)
    tms = runtime.settings.taskmanagers
    print(f"savepoint: {path}")
    print(
        f"parallelism {before} -> {runtime.settings.parallelism}"
        + (f" on {tms} TaskManagers" if tms else "")
        + f": the job runs again after {seconds:.1f}s"
    )
    return 0
