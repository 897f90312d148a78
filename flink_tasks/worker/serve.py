"""``flink-tasks serve MODULE:ATTR``: serve a `FlinkTasks` registry until SIGTERM.

One process (``--workers 1``, the default) runs a `Worker` behind aiohttp on ``host:port``. With
``--workers N`` (Linux) this process becomes a small supervisor: it starts N worker processes
that each bind their own ``SO_REUSEPORT`` socket on the same ``host:port``, so the kernel spreads
StateFun's connections over them; a worker that dies is started again. Any worker process may
serve any address: a pipeline's state lives in Flink and travels with every request.

Sync task bodies run in a pool of child processes by default (``--pool process``, Celery's
prefork model: a task that crashes, hangs or goes over its memory limit costs one child, never the
worker), ``--pool-size`` of them per worker process; ``--pool thread`` runs them in threads of the
worker process instead (cheaper per task, no isolation). Async bodies run on an event loop thread
of their own in either case. See `flink_tasks.worker.pool`.

SIGTERM or SIGINT stops gracefully: stop accepting connections, let running requests finish
(StateFun retries whatever is cut off), exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Literal

from aiohttp import web

from flink_tasks import wire
from flink_tasks.config import (
    inline_chain_steps_from_env,
    load_attribute,
    parse_duration,
    task_buckets_from_env,
)
from flink_tasks.engine import EngineSettings
from flink_tasks.kafka_security import KafkaSecurity
from flink_tasks.logs import LogFormat
from flink_tasks.registry import FlinkTasks
from flink_tasks.runtime.settings import LocalRuntimeSettings
from flink_tasks.worker.functions import (
    DEFAULT_BATCH_WAIT,
    DEFAULT_INLINE_WAIT,
    DEFAULT_LEASE,
    DEFAULT_QUEUE_WAIT,
    Worker,
)
from flink_tasks.worker.heartbeat import beating_while_starting, heartbeat_fd, send_heartbeats
from flink_tasks.worker.hooks import load_hooks
from flink_tasks.worker.http import LISTEN_BACKLOG, create_app
from flink_tasks.worker.reports import KafkaReportSink

# the supervisor's names, importable from here as before the split
from flink_tasks.worker.supervisor import RestartBackoff as RestartBackoff
from flink_tasks.worker.supervisor import Supervisor as Supervisor
from flink_tasks.worker.supervisor import describe_exit as describe_exit
from flink_tasks.worker.task_runner import PoolSettings

log = logging.getLogger("flink_tasks.serve")

#: Environment variable read for the default of ``--retention``.
RETENTION_VAR = "FLINK_TASKS_RETENTION"
#: Environment variable: extra task namespaces the module routes to this worker (comma list).
EXTRA_NAMESPACES_VAR = "FLINK_TASKS_EXTRA_FUNCTION_NAMESPACES"
#: Environment variable: how long a pipeline may make no progress before it is ended as orphaned
#: (``EngineSettings.stall_timeout``; default 24h; ``0`` never).
STALL_TIMEOUT_VAR = "FLINK_TASKS_STALL_TIMEOUT"
#: Environment variable: the Kafka topics replies and events may be written to (comma list).
EGRESS_TOPICS_VAR = "FLINK_TASKS_EGRESS_TOPICS"
#: Environment variables: where long tasks' heartbeats and results go.
BOOTSTRAP_VAR = "FLINK_TASKS_BOOTSTRAP_SERVERS"
TASK_REPORTS_TOPIC_VAR = "FLINK_TASKS_TASK_REPORTS_TOPIC"


@dataclass(frozen=True)
class ServeOptions:
    """What ``flink-tasks serve`` was asked to do."""

    target: str
    host: str = "127.0.0.1"
    port: int = 18000
    workers: int = 1
    reuse_port: bool = False
    retention: timedelta | None = None
    extra_namespaces: tuple[str, ...] = ()
    grace: timedelta = timedelta(seconds=30)
    shutdown_timeout: timedelta = timedelta(seconds=20)
    inline_wait: timedelta = DEFAULT_INLINE_WAIT
    batch_wait: timedelta = DEFAULT_BATCH_WAIT
    queue_wait: timedelta = DEFAULT_QUEUE_WAIT
    task_lease: timedelta = DEFAULT_LEASE
    worker_timeout: timedelta = timedelta(seconds=30)
    """With ``workers`` > 1: a worker process silent this long is killed (zero: never)."""
    env: dict[str, str] = field(default_factory=dict)
    pool: Literal["process", "thread"] = "process"
    pool_size: int | None = None
    max_memory_per_task: int | None = None
    hooks: tuple[str, ...] = ()
    log_format: LogFormat = "text"
    task_buckets: int | None = None
    """`EngineSettings.task_buckets`; None: ``FLINK_TASKS_TASK_BUCKETS`` or 8."""


def load_registry(target: str) -> FlinkTasks:
    """Import ``package.module:attribute`` (a `FlinkTasks`); the current directory is importable."""
    value = load_attribute(target, example="examples.seed:tasks")
    if not isinstance(value, FlinkTasks):
        raise TypeError(f"{target} is a {type(value).__name__}, not a FlinkTasks registry")
    return value


def build_worker(tasks: FlinkTasks, options: ServeOptions) -> Worker:
    namespaces = frozenset(tasks.namespaces) | frozenset(options.extra_namespaces)
    engine = EngineSettings(served_namespaces=namespaces)
    if options.retention is not None:
        engine = EngineSettings(served_namespaces=namespaces, retention=options.retention)
    # the environment is inherited by the worker processes
    engine = replace(engine, inline_chain_steps=inline_chain_steps_from_env())
    if os.environ.get(STALL_TIMEOUT_VAR):  # inherited by the worker processes
        stall = parse_duration(os.environ[STALL_TIMEOUT_VAR])
        engine = replace(engine, stall_timeout=stall or None)
    buckets = options.task_buckets
    engine = replace(engine, task_buckets=task_buckets_from_env() if buckets is None else buckets)
    pool = PoolSettings(
        kind=options.pool,
        size=options.pool_size,
        max_memory=options.max_memory_per_task,
        registry=options.target,
        hooks=options.hooks,
    )
    return Worker(
        tasks,
        engine=engine,
        hooks=[hook for target in options.hooks for hook in load_hooks(target)],
        egress_topics=egress_topics(),
        pool=pool,
        reports=report_sink(),
        inline_wait=options.inline_wait,
        batch_wait=options.batch_wait,
        queue_wait=options.queue_wait,
        lease=options.task_lease,
    )


def report_sink(environ: Mapping[str, str] | None = None) -> KafkaReportSink:
    """The task-reports topic on ``FLINK_TASKS_BOOTSTRAP_SERVERS`` (default: the local
    runtime's broker), topic ``FLINK_TASKS_TASK_REPORTS_TOPIC`` (default
    ``flink-tasks.task-reports``), with the Kafka security settings of `KafkaSecurity.from_env`."""
    env = os.environ if environ is None else environ
    # TLS / SASL like every other client: FLINK_TASKS_SECURITY_PROTOCOL, ..._SASL_PASSWORD_FILE
    security = KafkaSecurity.from_env(environ=env)
    return KafkaReportSink(
        env.get(BOOTSTRAP_VAR) or LocalRuntimeSettings().bootstrap_servers,
        env.get(TASK_REPORTS_TOPIC_VAR) or wire.DEFAULT_TASK_REPORTS_TOPIC,
        **security.kafka_python_options(),
    )


def egress_topics(environ: dict[str, str] | None = None) -> frozenset[str] | None:
    """The topics replies and events may go to: ``FLINK_TASKS_EGRESS_TOPICS`` (comma list; ``*``
    allows any), else the configured reply and events topics (``FLINK_TASKS_REPLIES_TOPIC``,
    ``FLINK_TASKS_EVENTS_TOPIC``, or their defaults). A reply to a topic that does not exist
    would fail the StateFun job, so a request naming another topic is refused and counted."""
    env = os.environ if environ is None else environ
    listed = env.get(EGRESS_TOPICS_VAR, "").strip()
    if listed == "*":
        return None
    if listed:
        return frozenset(t.strip() for t in listed.split(",") if t.strip())
    return frozenset(
        {
            env.get("FLINK_TASKS_REPLIES_TOPIC") or wire.DEFAULT_REPLY_TOPIC,
            env.get("FLINK_TASKS_EVENTS_TOPIC") or wire.DEFAULT_EVENTS_TOPIC,
        }
    )


async def serve_async(
    worker: Worker,
    options: ServeOptions,
    stop: asyncio.Event,
) -> None:
    """Serve until ``stop`` is set, then shut down gracefully."""
    runner = web.AppRunner(
        create_app(worker),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=options.shutdown_timeout.total_seconds(),
    )
    await worker.runner.start()  # a registry the children cannot import fails here, at once
    await runner.setup()
    site = web.TCPSite(
        runner,
        options.host,
        options.port,
        reuse_address=True,
        reuse_port=options.reuse_port or None,
        backlog=LISTEN_BACKLOG,
    )
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        await worker.runner.aclose()
        raise OSError(f"cannot listen on {options.host}:{options.port}: {err}") from err
    log.info(
        "worker pid %d serving %d task types on http://%s:%d",
        os.getpid(),
        len(worker.tasks.task_types),
        options.host,
        options.port,
    )
    try:
        await stop.wait()
    finally:
        log.info("worker pid %d stopping", os.getpid())
        await runner.cleanup()
        await worker.drain(options.shutdown_timeout.total_seconds())
        await worker.runner.aclose()


def run_worker(options: ServeOptions) -> int:
    """One worker process: serve until SIGTERM/SIGINT (beating to its supervisor, if any)."""
    beats = heartbeat_fd()
    with beating_while_starting(beats) if beats is not None else contextlib.nullcontext():
        worker = build_worker(load_registry(options.target), options)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        beating = asyncio.create_task(send_heartbeats(beats)) if beats is not None else None
        try:
            await serve_async(worker, options, stop)
        finally:
            if beating is not None:
                beating.cancel()

    asyncio.run(main())
    return 0


def serve(options: ServeOptions) -> int:
    """Run ``flink-tasks serve``: one worker here, or a supervisor of several."""
    if options.workers < 1:
        raise ValueError("--workers must be >= 1")
    if options.workers == 1:
        return run_worker(options)
    load_registry(options.target)  # fail here, once, rather than in every worker
    return Supervisor(options).run()
