"""``flink-tasks serve``: run task workers (one process or several, supervised)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from flink_tasks.cli.local import Subparsers
from flink_tasks.config import parse_duration, task_buckets_from_env
from flink_tasks.logs import LOG_FORMAT_VAR, LOG_FORMATS, LOG_LEVEL_VAR
from flink_tasks.runtime.settings import parse_endpoints
from flink_tasks.tracing import TRACING_VAR, tracing_from_env
from flink_tasks.types import parse_memory_size

log = logging.getLogger("flink_tasks.cli")

#: Environment form of --endpoint (``gpu=http://gpu:8000,io=http://io:8000``).
ENDPOINTS_VAR = "FLINK_TASKS_ENDPOINTS"


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
        help="how long a task may run while holding StateFun's call, counted from its start; "
        "longer tasks are answered with a lease and report through the task-reports topic "
        "(default 5s; keep it well under the runtime's call budget)",
    )
    serve.add_argument(
        "--batch-wait",
        type=parse_duration,
        default="500ms",
        metavar="DURATION",
        help="with --task-buckets: the inline wait of a group's tasks, which share a bucket's "
        "calls (what queues at a bucket waits for its call in flight); default 500ms",
    )
    serve.add_argument(
        "--queue-wait",
        type=parse_duration,
        default="15s",
        metavar="DURATION",
        help="how long a task queued for a pool slot may hold StateFun's call before it is "
        "leased anyway (default 15s; a call is held at most the longer of the two waits: keep "
        "both well under the runtime's call budget)",
    )
    serve.add_argument(
        "--task-lease",
        type=parse_duration,
        default="30s",
        metavar="DURATION",
        help="a long task with no heartbeat for this long fails as WorkerLostError (default 30s)",
    )
    serve.add_argument(
        "--worker-timeout",
        type=parse_duration,
        default="30s",
        metavar="DURATION",
        help="with --workers N: a worker process that sends its supervisor no heartbeat for "
        "this long (stopped, or its event loop blocked) is killed and started again; StateFun "
        "retries the calls it held on the others (default 30s; 0: never)",
    )
    serve.add_argument(
        "--task-buckets",
        type=int,
        default=None,
        metavar="N",
        help="send the tasks each pipeline's groups start to N task addresses, packed, so that "
        "StateFun batches them into few HTTP requests, run concurrently; a batch is answered "
        "after its tasks or the batch wait, whichever is first (default $FLINK_TASKS_TASK_BUCKETS "
        "or 8; 0: one request per task; see docs/reliability.md)",
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
    serve.add_argument(
        "--tracing",
        action="store_true",
        default=tracing_from_env(),
        help="an OpenTelemetry span per task attempt, to the global tracer provider your "
        f"--hooks module sets up (needs flink-tasks[tracing]; default ${TRACING_VAR})",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from flink_tasks.worker.heartbeat import MIN_TIMEOUT
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

    task_buckets = args.task_buckets
    try:
        if task_buckets is None:
            task_buckets = task_buckets_from_env()
        elif task_buckets < 0:
            raise ValueError(f"--task-buckets must be >= 0, got {task_buckets}")
        if args.worker_timeout and args.worker_timeout.total_seconds() < MIN_TIMEOUT:
            raise ValueError(f"--worker-timeout must be 0 or at least {MIN_TIMEOUT:g}s")
    except ValueError as exc:
        print(f"flink-tasks serve: error: {exc}", file=sys.stderr)
        return 2
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
        batch_wait=args.batch_wait,
        queue_wait=args.queue_wait,
        task_lease=args.task_lease,
        worker_timeout=args.worker_timeout,
        pool=args.pool,
        pool_size=args.pool_size,
        max_memory_per_task=args.max_memory_per_task,
        hooks=tuple(args.hooks),
        log_format=args.log_format,
        task_buckets=task_buckets,
    )
    # pool children are started by the fork server: they configure their logs from these
    os.environ[LOG_FORMAT_VAR] = args.log_format
    # worker processes (--workers N) inherit it: every one traces
    os.environ[TRACING_VAR] = "1" if args.tracing else "0"
    os.environ[LOG_LEVEL_VAR] = logging.getLevelName(logging.getLogger().level)
    if args.pool_size is not None and args.pool_size < 1:
        print("flink-tasks serve: error: --pool-size must be >= 1", file=sys.stderr)
        return 2
    try:
        return serve(options)
    except (ValueError, TypeError, ImportError, AttributeError, OSError) as exc:
        print(f"flink-tasks serve: error: {exc}", file=sys.stderr)
        return 1
