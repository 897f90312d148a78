"""Run the worker's HTTP endpoint: loopback by default."""

from __future__ import annotations

from types import TracebackType

from aiohttp import web

from flink_tasks.worker.functions import Worker
from flink_tasks.worker.http import LISTEN_BACKLOG, create_app


class WorkerServer:
    """Serves a `Worker` on host:port until closed. Binds to 127.0.0.1 unless told otherwise."""

    def __init__(self, worker: Worker, *, host: str = "127.0.0.1", port: int = 18000) -> None:
        self.worker = worker
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The base URL of the endpoint."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> WorkerServer:
        """Start listening."""
        runner = web.AppRunner(create_app(self.worker), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True, backlog=LISTEN_BACKLOG)
        try:
            await site.start()
        except OSError as err:
            await runner.cleanup()
            raise OSError(
                f"cannot listen on {self.host}:{self.port} for the worker: {err}"
            ) from err
        self._runner = runner
        return self

    async def stop(self, grace: float = 10.0) -> None:
        """Stop listening, let detached tasks report (up to `grace` s); idempotent."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            await self.worker.drain(grace)

    async def __aenter__(self) -> WorkerServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
