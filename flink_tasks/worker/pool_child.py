"""The body of a process-pool child: import the registry, then run one task at a time.

Messages on the pipe are bytes, never pickles: the parent sends a `TaskRequest`, the child answers
``R`` + `TaskResult` bytes; at start it answers ``K`` (ready) or ``E`` + a message (the registry
could not be imported).
"""

from __future__ import annotations

import contextlib
import signal
import traceback
from multiprocessing.connection import Connection

READY = b"K"
RESULT = b"R"
START_ERROR = b"E"


def child_main(
    target: str, conn: Connection, max_result_bytes: int, hook_targets: tuple[str, ...] = ()
) -> None:
    """Serve tasks of ``MODULE:ATTR`` over `conn` until the parent closes it, sync bodies
    wrapped by the ``around_sync`` middleware of `hook_targets` (each ``MODULE:ATTR``)."""
    _die_with_parent()
    # Ctrl-C reaches the whole process group; the parent decides when children stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from flink_tasks import logs
    from flink_tasks._proto import messages_pb2
    from flink_tasks.worker.execute import execute_sync
    from flink_tasks.worker.hooks import load_hooks, sync_middleware
    from flink_tasks.worker.serve import load_registry

    logs.configure_from_env()  # started by the fork server: nothing is configured yet
    try:
        tasks = load_registry(target)
        middleware = sync_middleware(h for t in hook_targets for h in load_hooks(t))
    except BaseException as exc:
        message = (
            f"cannot import {target} or hooks {list(hook_targets)}: {exc}\n{traceback.format_exc()}"
        )
        conn.send_bytes(START_ERROR + message.encode())
        return
    conn.send_bytes(READY)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        request = messages_pb2.TaskRequest.FromString(data)
        result = execute_sync(tasks, request, max_result_bytes, middleware)
        conn.send_bytes(RESULT + result.SerializeToString())


def _die_with_parent() -> None:
    """Linux: SIGKILL this child when its parent (the fork server) exits."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
