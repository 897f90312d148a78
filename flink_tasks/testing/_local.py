"""`PipelineEnvironment.start_local`: a worker here, Kafka + StateFun started or reused."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from flink_tasks.config import inline_chain_steps_from_env, task_buckets_from_env
from flink_tasks.engine import EngineSettings
from flink_tasks.registry import FlinkTasks

if TYPE_CHECKING:
    from flink_tasks.runtime import LocalRuntime, LocalRuntimeSettings
    from flink_tasks.testing.environment import KafkaPipelineClient, PipelineEnvironment
    from flink_tasks.worker import PoolSettings, Worker, WorkerServer

logger = logging.getLogger(__name__)

CLIENTS_GROUP = "flink_tasks.clients"
ClientFactory = Callable[..., "KafkaPipelineClient"]
"""Makes a Kafka client from keyword settings: bootstrap_servers, request_topic, action_topic,
reply_topic, events_topic, default_timeout, read_committed."""


def start_local(
    cls: type[PipelineEnvironment],
    tasks: FlinkTasks,
    *,
    settings: LocalRuntimeSettings | None = None,
    engine: EngineSettings | None = None,
    default_timeout: timedelta = timedelta(seconds=120),
    keep_running: bool = False,
    pool: PoolSettings | None = None,
    client: ClientFactory | None = None,
) -> _LocalEnvironment:
    """An environment whose `__aenter__` starts the worker, then the runtime, then a client.

    `client` makes the Kafka client from keyword settings (`FlinkTasksClient` does); by default
    the one the flink-tasks-client distribution declares (entry point group CLIENTS_GROUP)."""
    from flink_tasks.runtime import LocalRuntimeSettings

    base = settings if settings is not None else LocalRuntimeSettings.from_env()
    namespaces = tuple(sorted(set(base.extra_function_namespaces) | set(tasks.namespaces)))
    base = base.replace(extra_function_namespaces=namespaces)
    factory = client if client is not None else installed_client()
    return _LocalEnvironment(cls, tasks, base, engine, default_timeout, keep_running, factory, pool)


def installed_client() -> ClientFactory:
    """The Kafka client the installed flink-tasks-client distribution declares.

    Raises:
        RuntimeError: it is not installed (or declares none).
    """
    for entry_point in importlib.metadata.entry_points(group=CLIENTS_GROUP, name="kafka"):
        factory: ClientFactory = entry_point.load()
        return factory
    raise RuntimeError(
        "start_local needs a Kafka client: install the flink-tasks-client distribution "
        "(pip install flink-tasks-client), or pass client= a factory such as FlinkTasksClient"
    )


class _LocalEnvironment:
    """Entered as an async context manager; yields a `PipelineEnvironment` on the real runtime."""

    def __init__(
        self,
        cls: type[PipelineEnvironment],
        tasks: FlinkTasks,
        settings: LocalRuntimeSettings,
        engine: EngineSettings | None,
        default_timeout: timedelta,
        keep_running: bool,
        client: ClientFactory,
        pool: PoolSettings | None = None,
    ) -> None:
        self.client_factory = client
        self._cls = cls
        self.tasks = tasks
        self.settings = settings
        self.engine = engine
        self.default_timeout = default_timeout
        self.keep_running = keep_running
        self.pool = pool
        self.runtime: LocalRuntime | None = None
        self.server: WorkerServer | None = None
        self.worker: Worker | None = None
        self.env: PipelineEnvironment | None = None

    async def __aenter__(self) -> PipelineEnvironment:
        from flink_tasks.runtime import LocalRuntime
        from flink_tasks.worker import Worker, WorkerServer
        from flink_tasks.worker.reports import KafkaReportSink

        settings = self.settings
        namespaces = frozenset(settings.function_namespaces)
        worker: Worker = Worker(
            self.tasks,
            engine=self.engine
            or EngineSettings(
                served_namespaces=namespaces,
                task_buckets=task_buckets_from_env(),
                inline_chain_steps=inline_chain_steps_from_env(),
            ),
            # a reply to a topic that does not exist would fail the Flink job
            egress_topics=(settings.replies_topic, settings.events_topic),
            reports=KafkaReportSink(settings.bootstrap_servers, settings.task_reports_topic),
            pool=self.pool,
        )
        await worker.runner.start()
        self.worker = worker
        # The worker first: StateFun's first call to each function blocks until it answers.
        self.server = await WorkerServer(
            worker, host=settings.worker_host, port=settings.worker_port
        ).start()
        try:
            self.runtime = LocalRuntime(settings)
            await asyncio.to_thread(self.runtime.start)
            client = self.client_factory(
                bootstrap_servers=settings.bootstrap_servers,
                request_topic=settings.requests_topic,
                action_topic=settings.actions_topic,
                reply_topic=settings.replies_topic,
                events_topic=settings.events_topic,
                default_timeout=self.default_timeout,
                read_committed=settings.delivery_semantic == "exactly-once",
                # the environment shows the engine's own rules for ids (as in-process): a
                # running id is refused, a finished one runs again
                pipeline_reuse="allow",
            )
            await client.wait_ready_async()
        except BaseException:
            await self._stop_runtime()
            await self.server.stop()
            await worker.runner.aclose()
            raise
        self.env = self._cls(client, worker=worker)
        self.env._closers.append(client.aclose)
        return self.env

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Kafka's clients (the client, the worker's task-reports producer) close before the
        # broker stops: closed after it, kafka-python logs connection errors.
        try:
            if self.env is not None:
                await self.env.aclose()
        finally:
            try:
                if self.server is not None:
                    await self.server.stop()
                if self.worker is not None:
                    await self.worker.runner.aclose()
            finally:
                await self._stop_runtime()

    async def _stop_runtime(self) -> None:
        if self.runtime is not None and not self.keep_running:
            await asyncio.to_thread(self.runtime.stop)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"use `async with PipelineEnvironment.start_local(...) as env`; no {name!r} before that"
        )
