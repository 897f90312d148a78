"""`PipelineEnvironment.start_local`: a worker here, Kafka + StateFun started or reused."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from flink_tasks.engine.orchestrator import EngineSettings
from flink_tasks.registry import FlinkTasks

if TYPE_CHECKING:
    from flink_tasks.runtime import LocalRuntime, LocalRuntimeSettings
    from flink_tasks.testing.environment import PipelineEnvironment
    from flink_tasks.worker import Worker, WorkerServer

logger = logging.getLogger(__name__)


def start_local(
    cls: type[PipelineEnvironment],
    tasks: FlinkTasks,
    *,
    settings: LocalRuntimeSettings | None = None,
    engine: EngineSettings | None = None,
    default_timeout: timedelta = timedelta(seconds=120),
    keep_running: bool = False,
) -> _LocalEnvironment:
    """An environment whose `__aenter__` starts the worker, then the runtime, then a client."""
    from flink_tasks.runtime import LocalRuntimeSettings

    base = settings if settings is not None else LocalRuntimeSettings.from_env()
    namespaces = tuple(sorted(set(base.extra_function_namespaces) | set(tasks.namespaces)))
    base = base.replace(extra_function_namespaces=namespaces)
    return _LocalEnvironment(cls, tasks, base, engine, default_timeout, keep_running)


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
    ) -> None:
        self._cls = cls
        self.tasks = tasks
        self.settings = settings
        self.engine = engine
        self.default_timeout = default_timeout
        self.keep_running = keep_running
        self.runtime: LocalRuntime | None = None
        self.server: WorkerServer | None = None
        self.env: PipelineEnvironment | None = None

    async def __aenter__(self) -> PipelineEnvironment:
        from flink_tasks_client import FlinkTasksClient

        from flink_tasks.runtime import LocalRuntime
        from flink_tasks.worker import Worker, WorkerServer
        from flink_tasks.worker.reports import KafkaReportSink

        settings = self.settings
        namespaces = frozenset(settings.function_namespaces)
        worker: Worker = Worker(
            self.tasks,
            engine=self.engine or EngineSettings(served_namespaces=namespaces),
            # a reply to a topic that does not exist would fail the Flink job
            egress_topics=(settings.replies_topic, settings.events_topic),
            reports=KafkaReportSink(settings.bootstrap_servers, settings.task_reports_topic),
        )
        # The worker first: StateFun's first call to each function blocks until it answers.
        self.server = await WorkerServer(
            worker, host=settings.worker_host, port=settings.worker_port
        ).start()
        try:
            self.runtime = LocalRuntime(settings)
            await asyncio.to_thread(self.runtime.start)
            client = FlinkTasksClient(
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
        try:
            if self.env is not None:
                await self.env.aclose()
        finally:
            await self._stop_runtime()
            if self.server is not None:
                await self.server.stop()

    async def _stop_runtime(self) -> None:
        if self.runtime is not None and not self.keep_running:
            await asyncio.to_thread(self.runtime.stop)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"use `async with PipelineEnvironment.start_local(...) as env`; no {name!r} before that"
        )
