"""Heartbeats from each worker process of ``serve --workers N`` to its supervisor.

A worker process that is stopped (SIGSTOP, a paused container) or whose event loop is blocked
keeps its sockets open: StateFun's calls to it neither fail nor answer until the whole call
budget has gone, and then the job fails. It cannot report that itself, so it proves the
opposite: its event loop writes a byte to a pipe every `INTERVAL`, and the supervisor kills a
worker process that has been silent for ``--worker-timeout`` (gunicorn's arbiter does the same
with a file's timestamp; a pipe needs no file and no wall clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping

#: Environment variable through which a worker process learns its end of the pipe.
HEARTBEAT_FD_VAR = "FLINK_TASKS_HEARTBEAT_FD"
#: Seconds between two heartbeats of a worker process.
INTERVAL = 0.5
#: The shortest ``--worker-timeout``: a few heartbeats, so that one late beat never kills.
MIN_TIMEOUT = 4 * INTERVAL
#: How long the supervisor waits for the first heartbeat of a new worker process, if longer
#: than the timeout: the interpreter starting, before anything of ours runs.
FIRST_BEAT_WITHIN = 10.0


def heartbeat_fd(environ: Mapping[str, str] = os.environ) -> int | None:
    """This worker process's end of the pipe, if a supervisor gave it one."""
    value = environ.get(HEARTBEAT_FD_VAR)
    return int(value) if value else None


def _beat(fd: int) -> None:
    # a full pipe (a supervisor that does not read) or a closed one (a supervisor that died:
    # this process gets SIGTERM) must never stop the worker
    with contextlib.suppress(BlockingIOError, BrokenPipeError):
        os.write(fd, b".")


@contextlib.contextmanager
def beating_while_starting(fd: int) -> Iterator[None]:
    """Beat from a thread while the worker starts: importing a registry may take long, and
    only a stopped process should be killed for silence, not a slow import."""
    os.set_blocking(fd, False)
    started = threading.Event()

    def beat() -> None:
        _beat(fd)
        while not started.wait(INTERVAL):
            _beat(fd)

    thread = threading.Thread(target=beat, name="heartbeat-start", daemon=True)
    thread.start()
    try:
        yield
    finally:
        started.set()
        thread.join()


async def send_heartbeats(fd: int) -> None:
    """Beat on `fd` from this event loop until cancelled: a loop that stops running (the
    process stopped, or something blocking it) stops beating."""
    while True:
        _beat(fd)
        await asyncio.sleep(INTERVAL)


class HeartbeatPipe:
    """The supervisor's end of one worker process's heartbeat pipe."""

    def __init__(self) -> None:
        self._read, self.child_fd = os.pipe()
        os.set_blocking(self._read, False)
        self.last_beat: float | None = None

    def child_started(self) -> None:
        """The child has its copy of the write end: close ours, so that its exit reads as EOF."""
        os.close(self.child_fd)

    def drain(self) -> None:
        """Read whatever arrived; a beat since the last drain moves `last_beat` to now."""
        beats = 0
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._read, 4096):
                beats += len(chunk)
        if beats:
            self.last_beat = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._read)
