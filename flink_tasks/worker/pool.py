"""A process pool for sync task bodies: the Celery prefork model, one task at a time per child.

Why not `concurrent.futures.ProcessPoolExecutor`: one dead child breaks the whole executor
(`BrokenProcessPool`) and it cannot stop one hung call. Why not billiard (Celery's pool): it
brings Celery's own process model and pickles the work it is given. This pool is small:

- **Children** are started with the ``forkserver`` start method (``spawn`` where there is none):
  the worker process has threads (aiohttp's executor, kafka-python in tests), and ``fork`` from a
  threaded process can copy a held lock. A child imports the registry itself, by ``MODULE:ATTR``
  (what ``serve`` was given; for a registry object, the module attribute that holds it), so the
  user's module is imported after the fork, never inherited half-initialised. The fork server
  preloads only flink-tasks' own modules, so a replacement child starts in tens of ms plus the
  import of the user's module.
- **Only bytes cross the pipe**: `TaskRequest` bytes in, `TaskResult` bytes out; the child decodes
  the arguments, calls the body and encodes the result exactly as the thread pool does. No user
  value is ever pickled.
- **A child that dies** (a crash, a segfault, ``os._exit``, a kill) fails its task with
  `WorkerLostError` naming the exit code or signal; the child is replaced.
- **Timeouts**: a task is given to an idle child only, so its timeout counts from when the body
  starts, not from queueing; at the timeout the child is killed (SIGKILL: a body may ignore
  anything gentler) and replaced, and the task fails with `TaskTimeoutError`. Nothing leaks.
- **Memory limit**: the parent reads each busy child's resident set size (``/proc/<pid>/statm``)
  every `MEMORY_POLL_SECONDS` and kills a child over its task's limit (`MemoryLimitError`). RSS
  is what the OOM killer and containers count; ``setrlimit(RLIMIT_AS)`` limits *virtual* memory
  instead (thread stacks and allocator arenas make that far larger than what is used) and turns
  the limit into a `MemoryError` inside arbitrary code, some of which (C extensions) aborts on
  it. The cost of polling: a burst that allocates faster than one poll interval can overshoot
  the limit briefly. The limit counts the child's whole RSS, interpreter and imports included
  (~40 MiB), like Celery's ``--max-memory-per-child``; a child still above a task's limit when
  it is idle is replaced before it is given that task.
- **Children die with the worker**: each child asks the kernel to SIGKILL it when its parent
  (the fork server) exits, and the fork server exits when the worker process does.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import weakref
from collections.abc import Callable

from flink_tasks.errors import MemoryLimitError, WorkerLostError
from flink_tasks.worker import pool_child
from flink_tasks.worker.execute import TaskTimeoutError
from flink_tasks.worker.pool_processes import _Child, _context, rss_bytes
from flink_tasks.worker.pool_processes import registry_target as registry_target

logger = logging.getLogger(__name__)

MEMORY_POLL_SECONDS = 0.05
#: how long a starting child may take to import the registry and say it is ready
START_TIMEOUT_SECONDS = 60.0


class ProcessPool:
    """`size` child processes that run sync task bodies of the registry ``target``.

    Args:
        target: ``MODULE:ATTR`` of the `FlinkTasks` registry, imported by each child.
        size: number of children (tasks that run at once).
        max_result_bytes: the per-result size limit, checked in the child.
        on_lost: called with ``"crash" | "timeout" | "memory"`` when a child dies during a task.
        hook_targets: ``MODULE:ATTR`` of hooks whose ``around_sync`` wraps bodies in the children.
    """

    def __init__(
        self,
        target: str,
        *,
        size: int,
        max_result_bytes: int,
        on_lost: Callable[[str], None] | None = None,
        hook_targets: tuple[str, ...] = (),
    ) -> None:
        if size < 1:
            raise ValueError("a process pool needs at least 1 child")
        self.target = target
        self.size = size
        self.max_result_bytes = max_result_bytes
        self._on_lost = on_lost
        self.hook_targets = hook_targets
        self._ctx = _context()
        self._children: set[_Child] = set()
        self._idle: asyncio.Queue[_Child] | None = None
        self._started: asyncio.Task[None] | None = None
        self._memory_watch: asyncio.TimerHandle | None = None
        self._closing = False
        self._replacing: set[asyncio.Task[None]] = set()
        self.replaced = 0
        atexit.register(_kill_at_exit, weakref.ref(self))

    @property
    def pids(self) -> list[int]:
        """Pids of the live children."""
        return sorted(c.pid for c in self._children if not c.dead)

    async def start(self) -> None:
        """Start the children; raises if the registry cannot be imported. Idempotent."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._start_all())
        await asyncio.shield(self._started)

    async def _start_all(self) -> None:
        self._idle = asyncio.Queue()
        children = await asyncio.gather(
            *(self._start_child() for _ in range(self.size)), return_exceptions=True
        )
        errors = [c for c in children if isinstance(c, BaseException)]
        if errors:
            for child in children:
                if isinstance(child, _Child):
                    self._kill(child)
            raise errors[0]
        for child in children:
            assert isinstance(child, _Child)
            self._idle.put_nowait(child)
        logger.info("process pool: %d children for %s (pids %s)", self.size, self.target, self.pids)

    async def _start_child(self) -> _Child:
        loop = asyncio.get_running_loop()
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=pool_child.child_main,
            args=(self.target, child_end, self.max_result_bytes, self.hook_targets),
            name="flink-tasks-pool",
        )
        # talks to the fork server (and starts it the first time): not on the event loop
        await asyncio.to_thread(process.start)
        child_end.close()
        child = _Child(process, parent_end, pid=process.pid)
        self._children.add(child)
        child.waiter = loop.create_future()
        loop.add_reader(parent_end.fileno(), self._on_readable, child)
        loop.add_reader(process.sentinel, self._on_exit, child)
        child.readers = [parent_end.fileno(), process.sentinel]
        try:
            hello = await asyncio.wait_for(child.waiter, START_TIMEOUT_SECONDS)
        except BaseException:
            self._kill(child)
            raise
        finally:
            child.waiter = None
        if hello[:1] != pool_child.READY:
            self._kill(child)
            raise RuntimeError(
                f"a process-pool child could not start: {hello[1:].decode(errors='replace')}"
            )
        child.ready = True
        return child

    async def run(
        self,
        request: bytes,
        *,
        task_type: str,
        timeout: float,
        max_memory: int | None,
        on_start: Callable[[], None] = lambda: None,
    ) -> bytes:
        """Run one `TaskRequest` in a child and return its `TaskResult` bytes (`on_start` is
        called once a child has it).

        Raises `TaskTimeoutError`, `MemoryLimitError` or `WorkerLostError` when the child had to
        be stopped or died; the child is replaced in every case.
        """
        await self.start()
        assert self._idle is not None
        if self._closing:
            raise WorkerLostError("the worker is shutting down; the task did not start")
        loop = asyncio.get_running_loop()
        child = await self._idle.get()
        while child.dead or self._over(child, max_memory):
            if not child.dead:
                logger.info("process-pool child %d is over a task's memory limit", child.pid)
                self._kill(child)  # its exit replaces it
            child = await self._idle.get()
        child.waiter = loop.create_future()
        child.task_type, child.max_memory, child.timeout = task_type, max_memory, timeout
        child.kill_reason = ""
        on_start()
        try:
            child.conn.send_bytes(request)
        except OSError:
            self._kill(child)
            child.waiter = None
            raise WorkerLostError(
                f"the worker process for task {task_type!r} died before the task started"
            ) from None
        child.timer = loop.call_later(timeout, self._stop_child, child, "timeout")
        if max_memory is not None:
            self._watch_memory()
        try:
            reply = await child.waiter
        finally:
            if child.timer is not None:
                child.timer.cancel()
            child.waiter = None
        if not child.dead:
            self._idle.put_nowait(child)
        return reply[1:]

    def _over(self, child: _Child, limit: int | None) -> bool:
        if limit is None:
            return False
        rss = rss_bytes(child.pid)
        return rss is not None and rss >= limit

    def _on_readable(self, child: _Child) -> None:
        try:
            data = child.conn.recv_bytes()
        except (EOFError, OSError):
            # the child is gone; its exit (the sentinel) settles its task
            self._remove_reader(child, child.conn.fileno())
            return
        if child.waiter is not None and not child.waiter.done():
            child.waiter.set_result(data)

    def _on_exit(self, child: _Child) -> None:
        if child.dead:
            return
        child.dead = True
        for fd in child.readers:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd)
        child.readers = []
        child.process.join(0)
        code = child.process.exitcode
        with contextlib.suppress(Exception):
            child.conn.close()
        with contextlib.suppress(Exception):
            child.process.close()
        self._children.discard(child)
        if child.waiter is not None and not child.waiter.done():
            if not child.ready:
                child.waiter.set_exception(
                    RuntimeError(f"a process-pool child exited with {code} while starting")
                )
                return
            reason = child.kill_reason or "crash"
            if self._on_lost is not None:
                self._on_lost(reason)
            child.waiter.set_exception(self._lost_error(child, code))
        if child.ready and not self._closing:
            task = asyncio.ensure_future(self._replace())
            self._replacing.add(task)
            task.add_done_callback(self._replacing.discard)

    def _lost_error(self, child: _Child, code: int | None) -> BaseException:
        what = f"task {child.task_type!r}"
        if child.kill_reason == "timeout":
            return TaskTimeoutError(
                f"{what} did not finish within {child.timeout:g} s; its worker process was stopped"
            )
        if child.kill_reason == "memory":
            return MemoryLimitError(
                f"{what} used {child.killed_rss / 2**20:.0f} MiB, over its memory limit of "
                f"{(child.max_memory or 0) / 2**20:.0f} MiB; its worker process was stopped"
            )
        if child.kill_reason == "closing":
            return WorkerLostError(f"{what} was stopped: the worker is shutting down")
        if code is not None and code < 0:
            try:
                how = f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        return WorkerLostError(
            f"the worker process running {what} (pid {child.pid}) {how}; the task may or may "
            "not have had effects (see its retry policy)"
        )

    async def _replace(self) -> None:
        delay = 0.1
        while not self._closing:
            try:
                child = await self._start_child()
            except Exception as err:
                logger.error("could not replace a process-pool child (%s); retrying", err)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
                continue
            if self._closing:
                self._kill(child)
                return
            self.replaced += 1
            assert self._idle is not None
            self._idle.put_nowait(child)
            return

    def _stop_child(self, child: _Child, reason: str) -> None:
        if not child.dead and not child.kill_reason:
            child.kill_reason = reason
            logger.warning(
                "stopping process-pool child %d (task %r): %s", child.pid, child.task_type, reason
            )
            self._kill(child)

    def _kill(self, child: _Child) -> None:
        with contextlib.suppress(ProcessLookupError, ValueError, AttributeError):
            os.kill(child.pid, signal.SIGKILL)

    def _watch_memory(self) -> None:
        if self._memory_watch is not None:
            return
        self._memory_watch = asyncio.get_running_loop().call_later(
            MEMORY_POLL_SECONDS, self._check_memory
        )

    def _check_memory(self) -> None:
        self._memory_watch = None
        watched = False
        for child in list(self._children):
            if child.dead or child.waiter is None or child.max_memory is None:
                continue
            watched = True
            rss = rss_bytes(child.pid)
            if rss is not None and rss > child.max_memory:
                child.killed_rss = rss
                self._stop_child(child, "memory")
        if watched:
            self._watch_memory()

    def _remove_reader(self, child: _Child, fd: int) -> None:
        if fd in child.readers:
            child.readers.remove(fd)
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd)

    async def aclose(self, grace: float = 1.0) -> None:
        """Stop every child: idle ones at once, busy ones after `grace` seconds."""
        self._closing = True
        for task in list(self._replacing):
            task.cancel()
        for child in list(self._children):
            if child.waiter is None and not child.dead:
                self._remove_reader(child, child.conn.fileno())
                with contextlib.suppress(Exception):
                    child.conn.close()  # an idle child exits on EOF
        deadline = asyncio.get_running_loop().time() + grace
        while self._children and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for child in list(self._children):
            child.kill_reason = child.kill_reason or "closing"
            self._kill(child)
        while self._children and asyncio.get_running_loop().time() < deadline + 5:
            await asyncio.sleep(0.02)


def _kill_at_exit(ref: weakref.ref[ProcessPool]) -> None:
    pool = ref()
    if pool is not None:
        for child in list(pool._children):
            pool._kill(child)
